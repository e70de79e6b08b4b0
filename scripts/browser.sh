#!/usr/bin/env bash
# Browser tests drive Debian's chromium through Playwright; never a browser Playwright downloads.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium is missing: install Debian's chromium package (browser tests need /usr/bin/chromium)" >&2
  exit 1
fi
