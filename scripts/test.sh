#!/usr/bin/env bash
# Sets up (idempotently), builds, and runs every test: the C++ unit tests under CTest, the
# Python oracle tests and the Python package's tests (test_package.py) under pytest (torch
# 2.13), and the real-architecture tier (torchvision, timm, Hugging Face models under torch
# 2.14, in a venv of its own). Exits non-zero if any fails.
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh || exit 1

status=0
ctest --test-dir build --output-on-failure -j "$(nproc)" || status=1
EXMODE_BIN="$PWD/build/exmode" python3 -m pytest tests/python -q -n "$(nproc)" -p no:cacheprovider || status=1
EXMODE_BIN="$PWD/build/exmode" ./scripts/test-real.sh || status=1
exit $status
