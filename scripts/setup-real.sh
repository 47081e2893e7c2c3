#!/usr/bin/env bash
# Sets up the venv of the real-architecture tier (tests/real): creates it with
# `python3 -m venv` if missing and installs tests/real/requirements.txt only when
# `pip freeze` shows a pinned package missing or at another version. Idempotent; prints
# one line saying what it did. The venv is ${EXMODE_REAL_VENV:-${HOME:-/root}/.cache/exmode/venv-real}.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${EXMODE_REAL_VENV:-${HOME:-/root}/.cache/exmode/venv-real}"
REQ=tests/real/requirements.txt

created=""
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  created=1
fi

# The pinned name==version lines, and what the venv has, with names normalised (lower case,
# '-' for '_' and '.') so that `pip freeze` spellings compare equal; versions are kept as they are.
wanted=$(sed -e 's/[[:space:]]*#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$REQ" | awk -F'==' '{n=tolower($1); gsub(/[_.]/, "-", n); print n "==" $2}' | sort -u)
have=$("$VENV/bin/python" -m pip freeze --all 2>/dev/null | awk -F'==' 'NF==2 {n=tolower($1); gsub(/[_.]/, "-", n); print n "==" $2}' | sort -u)
missing=$(comm -23 <(echo "$wanted") <(echo "$have"))

if [ -z "$missing" ]; then
  echo "setup-real: $VENV already has every package of $REQ; nothing installed"
  exit 0
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ" > "$VENV/pip-install.log" 2>&1 \
  || { cat "$VENV/pip-install.log" >&2; echo "setup-real: installing $REQ into $VENV failed" >&2; exit 1; }
what=$(echo "$missing" | sed 's/==.*//' | paste -sd ' ' -)
if [ -n "$created" ]; then
  echo "setup-real: created $VENV and installed $REQ"
else
  echo "setup-real: installed into $VENV what was missing or at another version: $what"
fi
