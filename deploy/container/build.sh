#!/usr/bin/env bash
# Build Legato's container image without a registry or a base image: what the Dockerfile does,
# from a debootstrap'd Debian bookworm instead of debian:bookworm-slim.
#
#   deploy/container/build.sh            build (or bring up to date) the image's root filesystem
#   deploy/container/build.sh --podman   ... and import it into podman as localhost/legato:dev
#   deploy/container/build.sh wipe       remove everything it made (and dockerfile-check.sh's images)
#
# Layers, each cached under $LEGATO_DEPLOY_DIR/container (default .deploy/container) and redone
# only when what it depends on changed, like the Dockerfile's:
#   debootstrap/  debootstrap --variant=minbase bookworm (kept pristine; made once)
#   rootfs/       a copy of it + `install.sh base`              (again when install.sh changes)
#                 + `install.sh legato WHEEL` into /opt/legato  (venv made afresh when pyproject.toml
#                   or the base changed; else only Legato's wheel is replaced when its sources changed)
#   image/        config.json and config.sh: ENV, USER, WORKDIR, ENTRYPOINT, CMD... read from the
#                 Dockerfile's final stage (what run.sh applies)
# The steps themselves are deploy/container/install.sh, which the Dockerfile RUNs too: the two
# builds share them and cannot drift apart. Needs root; installs debootstrap from Debian if missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../common.sh
. "$here/../common.sh"
repo=$(dirname "$(dirname "$here")")
dir=$LEGATO_DEPLOY_DIR/container
pristine=$dir/debootstrap
root=$dir/rootfs
stamps=$dir/stamps
suite=bookworm
mirror=${LEGATO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${LEGATO_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
podman=0

case ${1:-} in
  "") ;;
  --podman) podman=1 ;;
  wipe)
    ! command -v podman >/dev/null \
      || podman rmi -f --ignore localhost/legato:dev localhost/legato:dockerfile localhost/legato-base:bookworm >/dev/null 2>&1 \
      || true
    rm -rf "$dir"; echo "container: removed $dir" >&2; exit 0 ;;
  *) die "usage: build.sh [--podman | wipe]" ;;
esac
[ "$(id -u)" = 0 ] || die "build.sh: needs root (debootstrap, mount, chroot)"
mkdir -p "$dir" "$stamps"
exec 9>"$dir/.lock"
flock 9  # one build at a time

log() { echo "container: $*" >&2; }
sha() { sha256sum | cut -c1-64; }
stamp_ok() { [ -f "$stamps/$1" ] && [ "$(cat "$stamps/$1")" = "$2" ]; }

# in_root [--bind HOST PATH]... -- CMD...: run CMD as root chrooted in the rootfs, in a private mount
# namespace (so nothing stays mounted) with /proc, /dev, a tmpfs on /tmp and /run, the host's DNS
# config and, for pip behind this host's network, its CA bundle (build-time only: not in the image).
in_root() {
  local binds=() envs=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
  while [ "$1" = --bind ]; do binds+=("$2" "$3"); shift 3; done
  [ "$1" = -- ] && shift
  local ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}
  if [ -n "$ca" ] && [ -f "$ca" ]; then binds+=("$ca" /run/build-ca.crt); envs+=(PIP_CERT=/run/build-ca.crt); fi
  [ -d "$dir/pip-cache" ] && { binds+=("$dir/pip-cache" /run/pip-cache); envs+=(PIP_CACHE_DIR=/run/pip-cache); }
  local v
  for v in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST PIP_DEFAULT_TIMEOUT http_proxy https_proxy no_proxy \
           HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!v:-}" ] && envs+=("$v=${!v}")
  done
  # shellcheck disable=SC2016  # expanded by the inner bash
  unshare --mount --propagation private --fork -- bash -euo pipefail -c '
    r=$1 n=$2; shift 2
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount -t tmpfs tmpfs "$r/tmp"
    mount -t tmpfs tmpfs "$r/run"
    [ -e "$r/etc/resolv.conf" ] || : >"$r/etc/resolv.conf"
    mount --bind /etc/resolv.conf "$r/etc/resolv.conf"
    for ((i = 0; i < n; i++)); do
      if [ -d "$1" ]; then mkdir -p "$r$2"; else mkdir -p "$(dirname "$r$2")"; : >"$r$2"; fi
      mount --bind "$1" "$r$2"; shift 2
    done
    exec chroot "$r" "$@"
  ' _ "$root" $((${#binds[@]} / 2)) "${binds[@]}" /usr/bin/env -i "${envs[@]}" "$@"
}

# 1. The pristine base: debootstrap, with the apt sources of Debian's official bookworm image.
if [ ! -f "$stamps/debootstrap" ]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  log "debootstrap --variant=minbase $suite ($mirror)"
  rm -rf "$pristine" "$pristine.tmp" && mkdir -p "$pristine.tmp"
  debootstrap --variant=minbase "$suite" "$pristine.tmp" "$mirror" >"$dir/debootstrap.log" 2>&1 \
    || { tail -30 "$dir/debootstrap.log" >&2; die "container: debootstrap failed (log: $dir/debootstrap.log)"; }
  rm -f "$pristine.tmp/etc/apt/sources.list"
  cat >"$pristine.tmp/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  : >"$pristine.tmp/etc/resolv.conf"  # the runtime provides it (Docker, podman, run.sh)
  rm -rf "$pristine.tmp/var/cache/apt/archives/"*.deb "$pristine.tmp/var/lib/apt/lists/"*
  mv "$pristine.tmp" "$pristine"
  rm -f "$stamps"/*
  touch "$stamps/debootstrap"
fi

# 2. The base layer: Debian packages, the user, the directories (Dockerfile stage `base`).
base_key=$( { cat "$here/install.sh"; echo "$suite $mirror $security_mirror"; } | sha)
if ! stamp_ok base "$base_key" || [ ! -d "$root" ]; then
  log "base layer: install.sh base"
  rm -f "$stamps/base" "$stamps/deps" "$stamps/legato"
  rm -rf "$root" && cp -a "$pristine" "$root"
  install -D -m 0755 "$here/install.sh" "$root/usr/local/lib/legato/install.sh"
  in_root -- bash /usr/local/lib/legato/install.sh base
  in_root -- bash /usr/local/lib/legato/install.sh clean
  echo "$base_key" >"$stamps/base"
fi

# 3. Legato: its wheel built from the sources the Dockerfile copies, then installed in the venv.
src=$dir/src
rm -rf "$src" && mkdir -p "$src"
# The web UI is built here, on the host (scripts/build-ui.sh; the Dockerfile builds it in a stage
# of its own), and its dist/ goes with the sources into the wheel.
bash "$repo/scripts/build-ui.sh" "$repo/frontend/ui"
(cd "$repo" && tar -c --exclude=__pycache__ --exclude='*.pyc' --exclude=node_modules \
  pyproject.toml legato history matching frontend worker) | tar -x -C "$src"
deps_key=$( { echo "$base_key"; cat "$src/pyproject.toml"; } | sha)
src_key=$( { echo "$deps_key"; cd "$src" && find . -type f -print0 | sort -z | xargs -0 sha256sum; } | sha)
if ! stamp_ok deps "$deps_key"; then
  log "dependencies changed (pyproject.toml or base): a new venv"
  rm -f "$stamps/deps" "$stamps/legato"
  rm -rf "$root/opt/legato"
fi
if ! stamp_ok legato "$src_key"; then
  mkdir -p "$dir/pip-cache"
  rm -rf "$dir/wheels" && mkdir -p "$dir/wheels"
  log "legato layer: install.sh wheel, install.sh legato"
  in_root --bind "$src" /tmp/src --bind "$dir/wheels" /tmp/wheels -- \
    bash /usr/local/lib/legato/install.sh wheel /tmp/src /tmp/wheels
  whl=$(cd "$dir/wheels" && ls legato-*.whl)
  in_root --bind "$dir/wheels" /tmp/wheels -- bash /usr/local/lib/legato/install.sh legato "/tmp/wheels/$whl"
  in_root -- bash /usr/local/lib/legato/install.sh clean
  echo "$deps_key" >"$stamps/deps"
  echo "$src_key" >"$stamps/legato"
  log "legato layer: $whl installed"
fi

# 4. The image's config, from the Dockerfile's final stage.
mkdir -p "$dir/image"
python3 "$here/image_config.py" "$repo/Dockerfile" "$dir/image"

# 5. Optionally, the image in podman's store, configured like the Dockerfile's (run.sh --engine
# podman runs it; podman's default runtime crun fails on some hosts, so runc is installed too).
if [ "$podman" = 1 ]; then
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    log "installing podman and runc (Debian packages)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
  fi
  import_key=$( { echo "$src_key"; cat "$dir/image/changes"; } | sha)
  if ! stamp_ok podman "$import_key" || ! podman image exists localhost/legato:dev; then
    changes=()
    while IFS= read -r line; do changes+=(--change "$line"); done <"$dir/image/changes"
    old=$(podman image inspect --format '{{.Id}}' localhost/legato:dev 2>/dev/null || true)
    tar -C "$root" -c . | podman import -q "${changes[@]}" - localhost/legato:dev >/dev/null
    [ -z "$old" ] || podman rmi "$old" >/dev/null 2>&1 || true  # the previous import, if unused
    echo "$import_key" >"$stamps/podman"
    log "imported into podman as localhost/legato:dev"
  fi
fi
log "image ready: $root (run it with deploy/container/run.sh)"
