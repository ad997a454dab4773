# SPDX-License-Identifier: GPL-2.0-or-later
# Entry points: `make demo` (two guests sharing memory) and `make check`.
# Everything else is set-up those two do by themselves.

SANITIZE ?= 0
export SANITIZE

.PHONY: all deps build check demo series bench fuzz clean help

all: build

help:
	@echo "make demo    set up, build, and run two guests sharing memory"
	@echo "make check   set up, build, and run every test (SANITIZE=1: ASan/UBSan)"
	@echo "make series  export the series as git format-patch files"
	@echo "make bench   benchmarks against Debian's stock QEMU 10.0.2"
	@echo "make clean   remove out/ (the composed tree and builds)"

deps:
	tools/deps.sh

build: deps
	tools/build.sh

check: build
	tests/run-all.sh

demo: build
	e2e/demo.sh

series: deps
	tools/export-series.sh

bench: build
	bench/run.sh

clean:
	rm -rf out
