#!/usr/bin/env bash
# Runs the real-architecture tier (tests/real: torchvision, timm and Hugging Face models
# exported by torch 2.14, switched by exmode, compared with eager PyTorch) in its own venv:
# the CLI on saved archives (test_real_models.py) and exmode.torch on ep.module() and the
# ExportedProgram in memory (test_real_fx.py). Sets the venv up first (scripts/setup-real.sh);
# builds exmode with scripts/setup.sh only if the binary is missing, or the system python3's
# exmode package is (or predates exmode.torch). EXMODE_BIN overrides the binary,
# EXMODE_PACKAGE the exmode package directory (default: the system python3's, put alone on
# the venv's sys.path by tests/real/conftest.py), EXMODE_REAL_VENV the venv,
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
# The package directory itself, not the site-packages it is in (whose torch 2.13 would shadow
# the venv's 2.14): the C++ core is built for CPython 3.11, as the venv, and does not link torch.
system_exmode_package() {
  python3 -c 'import exmode, os; print(os.path.dirname(exmode.__file__))' 2>/dev/null
}
if [ -z "${EXMODE_PACKAGE:-}" ]; then
  EXMODE_PACKAGE=$(system_exmode_package || true)
  if [ -z "$EXMODE_PACKAGE" ] || [ ! -f "$EXMODE_PACKAGE/torch/__init__.py" ]; then
    ./scripts/setup.sh
    EXMODE_PACKAGE=$(system_exmode_package) \
      || { echo "test-real: the system python3 cannot import exmode after scripts/setup.sh" >&2; exit 1; }
  fi
fi
export EXMODE_PACKAGE
exec "$VENV/bin/python" -m pytest tests/real -q -n 2 -p no:cacheprovider "$@"
