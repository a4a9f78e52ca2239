#!/usr/bin/env bash
# Create the virtualenv (if missing) and install Legato with its development tools into it.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 ships venv separately.
    echo "bootstrap: installing python3-venv" >&2
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
fi
# pip's own chatter goes to a log, shown only if the install fails.
log="$venv/install.log"
if ! { "$venv/bin/python" -m pip install -q --upgrade pip && "$venv/bin/python" -m pip install -q -e '.[dev]'; } \
    >"$log" 2>&1; then
  cat "$log" >&2
  exit 1
fi
echo "bootstrap: $venv/bin/legato is ready" >&2
