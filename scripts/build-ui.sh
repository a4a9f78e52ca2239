#!/usr/bin/env bash
# Build the web UI (frontend/ui: Preact + Vite + TypeScript) into frontend/ui/dist, which the
# Python package serves (frontend/web_ui.py). `make install` runs it (so `make test` and CI do),
# deploy/container/build.sh runs it before copying the sources, and the Dockerfile runs it in a
# build stage. Node.js and npm come from the machine, or from Debian's packages when it has none.
#
#   bash scripts/build-ui.sh [UI_DIR]      (default: frontend/ui beside this script)
#
# `npm ci` installs exactly package-lock.json (again only when it changed); the build runs again
# only when a source is newer than the last build.
set -euo pipefail
ui=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/frontend/ui}
cd "$ui"
log() { echo "build-ui: $*" >&2; }

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  command -v apt-get >/dev/null || { log "needs Node.js 18+ and npm (not found, and no apt-get)"; exit 1; }
  log "installing Node.js and npm (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    nodejs npm >/dev/null
fi
# The system's CA bundle (with any CA the host added) for npm's TLS, as pip and curl use it.
if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
fi
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || { log "needs Node.js 18 or newer, found $(node --version)"; exit 1; }

stamp=node_modules/.legato-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json "$stamp"
fi

newest_source=$(find index.html package.json package-lock.json tsconfig.json vite.config.ts src -type f \
  -newer dist/index.html 2>/dev/null | head -1 || true)
if [ ! -f dist/index.html ] || [ -n "$newest_source" ]; then
  log "npm run build"
  npm run build --silent >&2
fi
[ -f dist/index.html ] || { log "the build made no dist/index.html"; exit 1; }
