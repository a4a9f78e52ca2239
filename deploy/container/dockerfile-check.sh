#!/usr/bin/env bash
# Check that the Dockerfile builds the same image as deploy/container/build.sh, here, without a
# registry: buildah builds the Dockerfile (--isolation chroot: no OCI runtime needed) FROM
# build.sh's debootstrap rootfs imported as localhost/legato-base:bookworm (standing in for
# debian:bookworm-slim, which no registry can give us), and the result is compared with build.sh's
# image: the same image config (ENV, USER, WORKDIR, ENTRYPOINT, CMD, VOLUME, EXPOSE), the same
# Debian packages and versions, the same Python distributions in /opt/legato, the same user.
#
#   deploy/container/dockerfile-check.sh     prints "dockerfile-check: same image" or what differs
#
# Cached: done again only when the Dockerfile, install.sh or Legato's sources changed. The base
# image also gets this host's extra CA certificates (/usr/local/share/ca-certificates), which a
# host whose egress re-signs TLS needs for pip; the image's ca-certificates package adds them to
# its bundle. Needs root; installs buildah, podman and runc from Debian if missing.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../common.sh
. "$here/../common.sh"
repo=$(dirname "$(dirname "$here")")
dir=$LEGATO_DEPLOY_DIR/container
stamps=$dir/stamps
log() { echo "dockerfile-check: $*" >&2; }
sha() { sha256sum | cut -c1-64; }

bash "$here/build.sh" --podman
command -v buildah >/dev/null || {
  log "installing buildah (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah >/dev/null
}
exec 9>"$dir/.lock"
flock 9

ca_files=()
[ -d /usr/local/share/ca-certificates ] && while IFS= read -r f; do ca_files+=("$f"); done \
  < <(find /usr/local/share/ca-certificates -name '*.crt' -type f | sort)
base_key=$( { stat -c %Y "$stamps/debootstrap"; cat "${ca_files[@]}" /dev/null; } | sha)
if [ "$(cat "$stamps/dockerfile-base" 2>/dev/null)" != "$base_key" ] \
    || ! podman image exists localhost/legato-base:bookworm; then
  log "base image localhost/legato-base:bookworm from $dir/debootstrap"
  tmp=$(mktemp -d "$dir/base.XXXXXX")
  cp -a "$dir/debootstrap/." "$tmp/"
  mkdir -p "$tmp/usr/local/share/ca-certificates"
  [ ${#ca_files[@]} = 0 ] || cp "${ca_files[@]}" "$tmp/usr/local/share/ca-certificates/"
  tar -C "$tmp" -c . | podman import -q - localhost/legato-base:bookworm >/dev/null
  rm -rf "$tmp"
  echo "$base_key" >"$stamps/dockerfile-base"
fi

check_key=$( { echo "$base_key"; cat "$stamps/legato" "$repo/Dockerfile" "$repo/.dockerignore" \
  "$repo/scripts/build-ui.sh"; } | sha)
if [ "$(cat "$stamps/dockerfile-check" 2>/dev/null)" = "$check_key" ] \
    && podman image exists localhost/legato:dockerfile; then
  log "same image (checked before; nothing changed since)"
  exit 0
fi
rm -f "$stamps/dockerfile-check"
log "buildah bud (the Dockerfile, FROM localhost/legato-base:bookworm)"
old=$(podman image inspect --format '{{.Id}}' localhost/legato:dockerfile 2>/dev/null || true)
buildah bud -q --isolation chroot --network host --build-arg BASE=localhost/legato-base:bookworm \
  -t localhost/legato:dockerfile "$repo" >"$dir/buildah.log" 2>&1 \
  || { tail -40 "$dir/buildah.log" >&2; die "dockerfile-check: buildah bud failed (log: $dir/buildah.log)"; }
[ -z "$old" ] || podman rmi "$old" >/dev/null 2>&1 || true

# What to compare, from a root filesystem: packages, Python distributions, the user, the dirs.
inventory() {
  local r=$1
  dpkg-query --admindir="$r/var/lib/dpkg" -W -f '${Package} ${Version}\n' | sed 's/^/deb /'
  (cd "$r/opt/legato/lib/python3.11/site-packages" && ls -d ./*.dist-info) | sed 's|^\./|py |'
  grep '^legato:' "$r/etc/passwd" "$r/etc/group" | sed "s|^$r||"
  stat -c 'dir %n %u:%g %a' "$r/var/lib/legato" "$r/app" "$r/opt/legato" | sed "s| $r/| /|"
  readlink "$r/usr/local/bin/legato" | sed 's/^/link /'
}
ctr=$(buildah from -q localhost/legato:dockerfile)
trap 'buildah umount "$ctr" >/dev/null 2>&1 || true; buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
mnt=$(buildah mount "$ctr")
failed=0
if ! diff -u <(inventory "$dir/rootfs") <(inventory "$mnt") >"$dir/dockerfile-check.diff"; then
  log "build.sh's image (-) and the Dockerfile's (+) differ:"; cat "$dir/dockerfile-check.diff" >&2; failed=1
fi
config_of() {
  python3 -c 'import json, sys
c = json.load(sys.stdin)
c = c[0]["Config"] if isinstance(c, list) else c
keys = ("Env", "User", "WorkingDir", "Entrypoint", "Cmd", "Volumes", "ExposedPorts")
print(json.dumps({k: c.get(k) for k in keys}, indent=1, sort_keys=True))'
}
if ! diff -u <(config_of <"$dir/image/config.json") <(podman image inspect localhost/legato:dockerfile | config_of) \
    >"$dir/dockerfile-config.diff"; then
  log "image configs differ (build.sh -, Dockerfile +):"; cat "$dir/dockerfile-config.diff" >&2; failed=1
fi
[ "$failed" = 0 ] || exit 1
echo "$check_key" >"$stamps/dockerfile-check"
log "same image: $(grep -c '^deb ' <(inventory "$mnt")) Debian packages, $(grep -c '^py ' <(inventory "$mnt")) Python distributions, same config"
