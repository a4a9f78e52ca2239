#!/usr/bin/env bash
# The install steps of Legato's container image, in one place: the Dockerfile RUNs this script
# and deploy/container/build.sh runs it (under chroot) in a debootstrap'd Debian bookworm, so the
# image built with Docker/Podman and the one built locally without a registry get the same steps.
#
#   install.sh base              Debian packages (python3, venv, CA certificates, tzdata), the
#                                `legato` user and group (uid/gid 10001), /app and /var/lib/legato
#   install.sh wheel SRC OUT     build Legato's wheel from the sources in SRC into OUT (a throwaway
#                                step: the Dockerfile runs it in a build stage, build.sh on a tmpfs)
#   install.sh legato WHEEL      a venv at /opt/legato holding WHEEL and its dependencies (from
#                                PyPI), /usr/local/bin/legato pointing at its entry point
#   install.sh clean             drop apt's lists and caches (run at the end of each layer)
#
# pip's cache: none, unless PIP_CACHE_DIR is set (build.sh points it at a folder outside the image).
set -euo pipefail

LEGATO_UID=10001
LEGATO_GID=10001
VENV=/opt/legato
PACKAGES=(python3 python3-venv ca-certificates tzdata)

die() { echo "install.sh: $*" >&2; exit 1; }

pip_cache_opts() { if [ -n "${PIP_CACHE_DIR:-}" ]; then echo "--cache-dir=$PIP_CACHE_DIR"; else echo "--no-cache-dir"; fi; }

base() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  getent group legato >/dev/null || groupadd --gid "$LEGATO_GID" legato
  id legato >/dev/null 2>&1 || useradd --uid "$LEGATO_UID" --gid "$LEGATO_GID" --home-dir /var/lib/legato \
    --no-create-home --shell /usr/sbin/nologin legato
  [ "$(id -u legato)" = "$LEGATO_UID" ] || die "user legato exists with another uid"
  # The data dir (SQLite file, token files...) belongs to the user; the app dir is read-only to it.
  install -d -o "$LEGATO_UID" -g "$LEGATO_GID" -m 0750 /var/lib/legato
  install -d -m 0755 /app
}

wheel() {
  local src=${1:?SRC} out=${2:?OUT} venv
  venv=$(mktemp -d /tmp/legato-wheel-venv.XXXXXX)
  python3 -m venv "$venv"
  # Pure Python (py3-none-any); build isolation fetches setuptools and wheel from PyPI.
  # shellcheck disable=SC2046
  "$venv/bin/pip" wheel -q $(pip_cache_opts) --no-deps --wheel-dir "$out" "$src"
  rm -rf "$venv"
  ls "$out"/legato-*.whl >/dev/null || die "no wheel in $out"
}

legato() {
  local whl=${1:?WHEEL}
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # A rebuild (build.sh, same venv) replaces Legato itself; its dependencies stay if still satisfied.
  if "$VENV/bin/pip" show -q legato >/dev/null 2>&1; then "$VENV/bin/pip" uninstall -q -y legato; fi
  # shellcheck disable=SC2046
  "$VENV/bin/pip" install -q $(pip_cache_opts) "$whl"
  ln -sf "$VENV/bin/legato" /usr/local/bin/legato
  /usr/local/bin/legato --help >/dev/null
}

clean() {
  apt-get clean
  rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache
}

cmd=${1:-}
shift || true
case $cmd in
  base|wheel|legato|clean) "$cmd" "$@" ;;
  *) die "usage: install.sh base | wheel SRC OUT | legato WHEEL | clean" ;;
esac
