#!/usr/bin/env bash
# Run Legato's image (built by deploy/container/build.sh) like `docker run --rm --network host`:
# as the image's USER, in its WORKDIR, with its ENV and ENTRYPOINT (all read from the Dockerfile
# by build.sh), the network being the host's (a server inside listens on the host's loopback).
#
#   deploy/container/run.sh [--engine chroot|podman] [--name NAME] [-v HOST:PATH[:ro]]... [-e K=V]...
#                           [--entrypoint CMD] [--] [ARGS...]
#
#   run.sh -v "$PWD/examples/shop:/app:ro" -- worker --entries /app --address 127.0.0.1:7233
#   run.sh -v /srv/legato:/var/lib/legato -- server start-dev --db /var/lib/legato/legato.db
#
# Engines ($LEGATO_CONTAINER_ENGINE, default chroot):
#   chroot  no container engine: the image's root filesystem under an overlay (writes go to a tmpfs
#           and are gone on exit; the image stays as built), in new mount and PID namespaces,
#           chrooted, /proc, /sys (read-only), a minimal /dev and a tmpfs /tmp, like a runtime
#           would set up. Works wherever root can mount.
#   podman  `podman run` of localhost/legato:dev (build.sh --podman imports it) with the runc
#           runtime and ulimits this host allows: where CAP_SYS_RESOURCE is missing podman's
#           default ulimits cannot be set, and crun refuses hybrid cgroups (see README).
# ARGS replace the image's CMD, as with docker run. A volume's host folder must be writable by the
# image's user (uid 10001) if the container writes there. Needs root.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../common.sh
. "$here/../common.sh"
dir=$LEGATO_DEPLOY_DIR/container
if [ ! -f "$dir/image/config.sh" ] || [ ! -f "$dir/stamps/legato" ]; then
  die "run.sh: no image yet: run deploy/container/build.sh"
fi
# shellcheck source=/dev/null
. "$dir/image/config.sh"
[ "$(id -u)" = 0 ] || die "run.sh: needs root"

engine=${LEGATO_CONTAINER_ENGINE:-chroot} name="" volumes=() envs=() entrypoint=()
while [ $# -gt 0 ]; do
  case $1 in
    --engine) engine=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    -v|--volume) volumes+=("$2"); shift 2 ;;
    -e|--env) envs+=("$2"); shift 2 ;;
    --entrypoint) entrypoint=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) die "run.sh: unknown option $1" ;;
    *) break ;;
  esac
done
for v in "${volumes[@]}"; do
  [ -e "${v%%:*}" ] || die "run.sh: volume source ${v%%:*} does not exist"
done

if [ "$engine" = podman ]; then
  podman image exists localhost/legato:dev || die "run.sh: no podman image: run deploy/container/build.sh --podman"
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
  # podman lowers its own RLIMIT_NPROC to 32768; the container cannot get more than podman has.
  [ "$nproc" != unlimited ] && [ "$nproc" -le 32768 ] || nproc=32768
  [ "$nofile" != unlimited ] || nofile=1048576
  opts=(--rm --network host --runtime runc --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  [ -z "$name" ] || opts+=(--name "$name")
  for v in "${volumes[@]}"; do opts+=(-v "$v"); done
  for e in "${envs[@]}"; do opts+=(-e "$e"); done
  [ ${#entrypoint[@]} = 0 ] || opts+=(--entrypoint "${entrypoint[0]}")
  exec podman run "${opts[@]}" localhost/legato:dev "$@"
fi
[ "$engine" = chroot ] || die "run.sh: unknown engine $engine (chroot or podman)"

args=("$@")
# Like docker run: ARGS replace CMD, and --entrypoint drops the image's CMD.
[ $# -gt 0 ] || [ ${#entrypoint[@]} -gt 0 ] || args=("${IMAGE_CMD[@]}")
[ ${#entrypoint[@]} -gt 0 ] || entrypoint=("${IMAGE_ENTRYPOINT[@]}")
user=${IMAGE_USER%%:*} group=${IMAGE_USER#*:}
[ "$group" != "$IMAGE_USER" ] || group=$user
mkdir -p "$dir/mnt"

# In the new namespaces ($1 = rootfs, $2 = where to assemble the container, $3 = number of volumes,
# then the volumes, then chroot's arguments). The container's processes die with unshare
# (--kill-child), and all of them with its first one (a PID namespace).
# shellcheck disable=SC2016  # expanded by the inner bash
exec unshare --mount --propagation private --pid --fork --kill-child -- bash -euo pipefail -c '
  rootfs=$1 mnt=$2 n=$3; shift 3
  mount -t tmpfs -o mode=0755 container "$mnt"
  mkdir "$mnt/upper" "$mnt/work" "$mnt/root"
  mount -t overlay overlay -o "lowerdir=$rootfs,upperdir=$mnt/upper,workdir=$mnt/work" "$mnt/root"
  r=$mnt/root
  mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
  mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
  mount -t tmpfs -o mode=0755,nosuid dev "$r/dev"
  for d in null zero full random urandom tty; do : >"$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"; done
  ln -s /proc/self/fd "$r/dev/fd"
  ln -s /proc/self/fd/0 "$r/dev/stdin"; ln -s /proc/self/fd/1 "$r/dev/stdout"; ln -s /proc/self/fd/2 "$r/dev/stderr"
  mkdir "$r/dev/shm" && mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmp "$r/tmp"
  for f in resolv.conf hosts hostname; do
    [ -e "/etc/$f" ] || continue
    [ -e "$r/etc/$f" ] || : >"$r/etc/$f"
    mount --bind "/etc/$f" "$r/etc/$f"
  done
  for ((i = 0; i < n; i++)); do
    IFS=: read -r src dst mode <<<"$1"; shift
    if [ -d "$src" ]; then mkdir -p "$r$dst"; else mkdir -p "$(dirname "$r$dst")"; : >"$r$dst"; fi
    mount --bind "$src" "$r$dst"
    [ "$mode" != ro ] || mount -o remount,bind,ro "$r$dst"
  done
  exec chroot "$@"
' _ "$dir/rootfs" "$dir/mnt" "${#volumes[@]}" "${volumes[@]}" \
  --userspec="$user:$group" --groups="$group" "$dir/mnt/root" \
  /usr/bin/env -i --chdir="$IMAGE_WORKDIR" "${IMAGE_ENV[@]}" "${envs[@]}" "${entrypoint[@]}" "${args[@]}"
