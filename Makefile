# The two commands a fresh machine needs:
#   make demo   set up .venv and run merforge on the bundled samples, offline
#   make test   set up .venv, start PostgreSQL and install Debian's chromium if needed, run the whole test suite
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	@start=$$(date +%s); .venv/bin/merforge demo demo-workspace; \
	echo "make demo took $$(( $$(date +%s) - start )) s after setup"

test: setup
	@bash scripts/services.sh
	@bash scripts/browser.sh
	.venv/bin/pytest

bench: setup
	.venv/bin/python benchmarks/sample_bench.py
