#!/usr/bin/env bash
# Runs the real-architecture tier (tests/real: torchvision, timm and Hugging Face models
# exported by torch 2.14, switched by exmode, compared with eager PyTorch) in its own venv.
# Sets the venv up first (scripts/setup-real.sh); builds exmode with scripts/setup.sh only
# if the binary is missing. EXMODE_BIN overrides the binary, EXMODE_REAL_VENV the venv,
# EXMODE_REAL_REPORT names a file for the summary table. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-real.sh
VENV="${EXMODE_REAL_VENV:-${HOME:-/root}/.cache/exmode/venv-real}"
export EXMODE_BIN="${EXMODE_BIN:-$PWD/build/exmode}"
if [ ! -x "$EXMODE_BIN" ]; then
  if [ "$EXMODE_BIN" != "$PWD/build/exmode" ]; then
    echo "test-real: EXMODE_BIN=$EXMODE_BIN is not an executable file" >&2
    exit 1
  fi
  ./scripts/setup.sh
fi
exec "$VENV/bin/python" -m pytest tests/real -q -n 2 -p no:cacheprovider "$@"
