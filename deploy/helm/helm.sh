#!/usr/bin/env bash
# Builds Helm (helm.sh/helm/v4, the version below) from the Go module proxy, once, and prints the
# path of the binary. The binary is cached in $LEGATO_DEPLOY_DIR/tools/helm-<version>/ (default
# <repo>/.deploy, gitignored), so a second call only prints the path.
#
#   deploy/helm/helm.sh            build if missing, print the path
#   deploy/helm/helm.sh --rebuild  build again
#
# Needs Go (on PATH or /usr/local/go/bin) and the Go module proxy (GOPROXY as set, default
# proxy.golang.org). Environment: HELM_VERSION (default v4.3.2), LEGATO_GO_PARALLEL (parallel
# compile jobs, default 1: the build runs niced on one job so that it does not starve the machine).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

VERSION=${HELM_VERSION:-v4.3.2}
DIR=$LEGATO_DEPLOY_DIR/tools/helm-$VERSION
BIN=$DIR/helm

find_go() {
  command -v go 2>/dev/null && return 0
  [ -x /usr/local/go/bin/go ] && { echo /usr/local/go/bin/go; return 0; }
  die "deploy/helm: no Go toolchain (go on PATH or /usr/local/go/bin/go) to build Helm with"
}

if [ "${1:-}" = "--rebuild" ]; then rm -rf "$DIR"; fi
if [ ! -x "$BIN" ]; then
  GO=$(find_go)
  mkdir -p "$DIR"
  tmp=$(mktemp -d "$DIR/.build.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "deploy/helm: building helm.sh/helm/v4 $VERSION with $("$GO" env GOVERSION) (once; cached in $DIR)" >&2
  # CGO off: a static binary that needs no C toolchain. GOFLAGS -p bounds the parallel compiles.
  CGO_ENABLED=0 GOBIN=$tmp GOFLAGS="-p=${LEGATO_GO_PARALLEL:-1} -trimpath" \
    nice -n 10 "$GO" install "helm.sh/helm/v4/cmd/helm@$VERSION" \
    || die "deploy/helm: go install helm.sh/helm/v4/cmd/helm@$VERSION failed"
  mv "$tmp/helm" "$BIN"
fi
echo "$BIN"
