#!/usr/bin/env bash
# Creates .venv in the checkout and installs merforge with its test tools.
# torch is installed first and pinned: a bare `torch` requirement can pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { echo "merforge needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

stamp=.venv/.merforge-installed
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c 'import merforge' 2>/dev/null; then
  # compiled judge / aggregation: rebuilt only where a source changed since its build
  .venv/bin/python -m merforge.native
  exit 0
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
# Cython builds of the judge and the aggregation (about 40 s); without a C compiler they run as Python
.venv/bin/python -m merforge.native
.venv/bin/python -c 'import cv2, av, torch, merforge; print(f"merforge ready: torch {torch.__version__}, OpenCV {cv2.__version__}, PyAV {av.__version__}")'
touch "$stamp"
