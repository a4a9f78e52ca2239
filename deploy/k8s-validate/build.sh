#!/usr/bin/env bash
# Builds the strict manifest validator (the Go program beside this script: k8s-validate, which
# decodes each object of a YAML stream into its k8s.io/api type in strict mode) and prints the
# path of the binary. The binary is cached in $LEGATO_DEPLOY_DIR/tools/k8s-validate-<hash>/
# (default <repo>/.deploy, gitignored), the hash being that of the sources, go.mod and go.sum: a
# second call only prints the path, a changed source builds again.
#
#   deploy/k8s-validate/build.sh    build if missing or changed, print the path
#
# Needs Go (on PATH or /usr/local/go/bin) and the Go module proxy (GOPROXY as set, default
# proxy.golang.org); the modules are pinned by go.mod and go.sum. LEGATO_GO_PARALLEL: parallel
# compile jobs (default 1; the build runs niced).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

SRC=$DEPLOY_SRC/k8s-validate
HASH=$(cd "$SRC" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
DIR=$LEGATO_DEPLOY_DIR/tools/k8s-validate-$HASH
BIN=$DIR/k8s-validate

if [ ! -x "$BIN" ]; then
  GO=$(command -v go || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true)
  [ -n "$GO" ] || die "deploy/k8s-validate: no Go toolchain (go on PATH or /usr/local/go/bin/go)"
  mkdir -p "$DIR"
  echo "deploy/k8s-validate: building the validator with $("$GO" env GOVERSION) (once; cached in $DIR)" >&2
  # -mod=readonly: go.mod and go.sum as committed, never rewritten by a build.
  (cd "$SRC" && CGO_ENABLED=0 GOFLAGS="-mod=readonly -p=${LEGATO_GO_PARALLEL:-1} -trimpath" \
    nice -n 10 "$GO" build -o "$BIN.tmp" .) || die "deploy/k8s-validate: go build failed"
  mv "$BIN.tmp" "$BIN"
fi
echo "$BIN"
