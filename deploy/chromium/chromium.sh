#!/usr/bin/env bash
# Debian's Chromium for the web UI's browser tests (tests/integration/test_web_ui.py), installed
# from Debian's packages when this machine lacks it (Playwright's own browser download is not
# used). Prints the browser's path on stdout.
#
#   bash deploy/chromium/chromium.sh          # install if missing; print the path
#   LEGATO_CHROMIUM=/path/to/chrome ...       # use that browser instead
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

if [ -n "${LEGATO_CHROMIUM:-}" ]; then
  [ -x "$LEGATO_CHROMIUM" ] || die "chromium: LEGATO_CHROMIUM=$LEGATO_CHROMIUM is not an executable"
  echo "$LEGATO_CHROMIUM"
  exit 0
fi
for candidate in /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -x "$candidate" ]; then echo "$candidate"; exit 0; fi
done
command -v apt-get >/dev/null || die "chromium: not installed, and no apt-get to install it (set LEGATO_CHROMIUM)"
echo "chromium: installing Debian's chromium (once)" >&2
# Another test run may be installing it at the same moment: take turns on dpkg's lock.
apt-get update -qq >&2 || die "chromium: apt-get update failed"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium >&2 \
  || die "chromium: apt-get install chromium failed"
[ -x /usr/bin/chromium ] || die "chromium: installed, but /usr/bin/chromium is missing"
echo /usr/bin/chromium
