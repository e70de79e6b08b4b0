# The two commands a fresh machine needs:
#   make demo   set up .venv and run merforge on the bundled samples, offline
#   make test   set up .venv, start PostgreSQL and install Debian's chromium if needed, run the whole test suite
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo:
	@start=$$(date +%s); bash scripts/setup.sh && .venv/bin/merforge demo demo-workspace && \
	echo "make demo took $$(( $$(date +%s) - start )) s in all, install included"

test: setup
	@bash scripts/services.sh
	@bash scripts/browser.sh
	.venv/bin/pytest

bench: setup
	.venv/bin/python benchmarks/sample_bench.py
	.venv/bin/python benchmarks/pipeline_bench.py
