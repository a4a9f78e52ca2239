#!/usr/bin/env bash
# Checks the Helm chart (helm/legato) without a Kubernetes cluster:
#   * helm lint --strict, and helm template piped through the strict validator (every object
#     decoded into its k8s.io/api type, deploy/k8s-validate), for the default values and for each
#     values file in tests/chart/*.yaml;
#   * each values file in tests/chart/bad/*.yaml is refused by values.schema.json: helm template
#     fails and its error contains the text of the file's "# expect: ..." line.
# Helm and the validator are built once by their scripts (cached under $LEGATO_DEPLOY_DIR/tools).
#
#   deploy/helm/chart-check.sh        exit 0 when every check passes; prints one line per check
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

ROOT=$(dirname "$DEPLOY_SRC")
CHART=$ROOT/helm/legato
CASES=$ROOT/tests/chart
HELM=$("$DEPLOY_SRC/helm/helm.sh")
VALIDATE=$("$DEPLOY_SRC/k8s-validate/build.sh")
passed=0 failed=0
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

ok() { passed=$((passed + 1)); echo "ok    $*"; }
bad() { failed=$((failed + 1)); echo "FAIL  $*"; }

# good NAME [helm args...]: lint and render with these values, and validate every object.
good() {
  local name=$1; shift
  if ! "$HELM" lint --strict "$CHART" "$@" >"$out/lint" 2>&1; then
    bad "$name: helm lint"; sed 's/^/      /' "$out/lint"; return
  fi
  if ! "$HELM" template legato "$CHART" --namespace legato "$@" >"$out/render.yaml" 2>"$out/err"; then
    bad "$name: helm template"; sed 's/^/      /' "$out/err"; return
  fi
  if ! "$VALIDATE" "$out/render.yaml" >"$out/valid" 2>&1; then
    bad "$name: k8s-validate"; sed 's/^/      /' "$out/valid"; return
  fi
  ok "$name: lint, template, $(sed 's/^k8s-validate: //' "$out/valid")"
}

good "defaults"
for f in "$CASES"/*.yaml; do
  good "$(basename "$f")" -f "$f"
done

for f in "$CASES"/bad/*.yaml; do
  name="bad/$(basename "$f")"
  expect=$(sed -n 's/^# expect: //p' "$f" | head -1)
  [ -n "$expect" ] || { bad "$name: no '# expect: ...' line"; continue; }
  if "$HELM" template legato "$CHART" -f "$f" >/dev/null 2>"$out/err"; then
    bad "$name: accepted, expected the schema to refuse it ($expect)"
  elif grep -qF -- "$expect" "$out/err"; then
    ok "$name: refused ($expect)"
  else
    bad "$name: refused, but the error lacks '$expect':"; sed 's/^/      /' "$out/err"
  fi
done

echo "chart-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
