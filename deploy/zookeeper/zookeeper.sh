#!/usr/bin/env bash
# Apache ZooKeeper 3.9 on loopback, from Maven Central's jars: a single node, and a three-node
# ensemble for fault tests.
#
#   deploy/zookeeper/zookeeper.sh start              fetch (first time), configure, start, wait until it serves
#   deploy/zookeeper/zookeeper.sh stop               SIGTERM, SIGKILL after 30 s
#   deploy/zookeeper/zookeeper.sh kill               SIGKILL
#   deploy/zookeeper/zookeeper.sh status             exit 0 when the node serves (its `srvr` answers a mode)
#   deploy/zookeeper/zookeeper.sh run                in the foreground
#   deploy/zookeeper/zookeeper.sh fetch              only fetch the jars
#   deploy/zookeeper/zookeeper.sh wipe               stop and delete the data
#   deploy/zookeeper/zookeeper.sh ensemble start     start the three members at once, wait until a quorum serves
#   deploy/zookeeper/zookeeper.sh ensemble start N   start member N (1..3), wait until it serves
#   deploy/zookeeper/zookeeper.sh ensemble stop [N]  SIGTERM all members (or member N)
#   deploy/zookeeper/zookeeper.sh ensemble kill [N]  SIGKILL member N (or all), wait until it is gone
#   deploy/zookeeper/zookeeper.sh ensemble status    each member's mode; exit 0 when a quorum serves
#   deploy/zookeeper/zookeeper.sh ensemble wipe      stop all members and delete their data
#
# The single node listens on 127.0.0.1:2181, data in $LEGATO_DEPLOY_DIR/zookeeper. Member N of the
# ensemble listens on 127.0.0.1:(2280+N) for clients, 2290+N for followers and 2390+N for leader
# election, data in $LEGATO_DEPLOY_DIR/zookeeper-ensemble/N.
#
# Environment: ZOOKEEPER_PORT (default 2181), ZOOKEEPER_ENSEMBLE_BASE_PORT (default 2280),
# ZOOKEEPER_QUORUM_BASE_PORT (default 2290), ZOOKEEPER_ELECTION_BASE_PORT (default 2390),
# ZOOKEEPER_HEAP (per server, default 256M), LEGATO_DEPLOY_DIR (state; default <repo>/.deploy).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

HERE=$DEPLOY_SRC/zookeeper
HOME_DIR=$LEGATO_DEPLOY_DIR/zookeeper
ENSEMBLE_DIR=$LEGATO_DEPLOY_DIR/zookeeper-ensemble
LIB=$HOME_DIR/lib
PIDFILE=$HOME_DIR/zookeeper.pid
PORT=${ZOOKEEPER_PORT:-2181}
BASE_PORT=${ZOOKEEPER_ENSEMBLE_BASE_PORT:-2280}
QUORUM_BASE_PORT=${ZOOKEEPER_QUORUM_BASE_PORT:-2290}
ELECTION_BASE_PORT=${ZOOKEEPER_ELECTION_BASE_PORT:-2390}
HEAP=${ZOOKEEPER_HEAP:-256M}
START_TIMEOUT=${ZOOKEEPER_START_TIMEOUT:-60}
MEMBERS=(1 2 3)

# configure DIR PORT [MYID]: DIR/conf/zoo.cfg and logback.xml; with MYID, an ensemble member.
configure() {
  local dir=$1 port=$2 myid=${3:-} i
  mkdir -p "$dir"/{conf,data,logs}
  sed -e "s|@HOME@|$dir|g" -e "s|@PORT@|$port|g" "$HERE/zoo.cfg.in" >"$dir/conf/zoo.cfg"
  sed -e "s|@HOME@|$dir|g" "$HERE/logback.xml.in" >"$dir/conf/logback.xml"
  [ -n "$myid" ] || return 0
  echo "$myid" >"$dir/data/myid"
  for i in "${MEMBERS[@]}"; do
    echo "server.$i=127.0.0.1:$((QUORUM_BASE_PORT + i)):$((ELECTION_BASE_PORT + i))" >>"$dir/conf/zoo.cfg"
  done
}

# java_args DIR: the JVM's command line for the server configured in DIR. A small heap and the serial
# collector: up to four of them share a small machine with Cassandra and Kafka.
java_args() {
  cat <<ARGS
-Xms$HEAP
-Xmx$HEAP
-XX:+UseSerialGC
-XX:+ExitOnOutOfMemoryError
-Djava.awt.headless=true
-Djava.net.preferIPv4Stack=true
-Dlogback.configurationFile=$1/conf/logback.xml
-Dzookeeper.log.dir=$1/logs
-cp
$LIB/*
org.apache.zookeeper.server.quorum.QuorumPeerMain
$1/conf/zoo.cfg
ARGS
}

# four_letter PORT WORD: the answer of 127.0.0.1:PORT to a four-letter-word command (srvr, ruok, ...).
four_letter() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1" && printf '%s' "$2" >&3 && timeout 5 cat <&3) 2>/dev/null
}

# mode PORT: standalone, leader or follower once the server serves clients; empty otherwise.
mode() { four_letter "$1" srvr | sed -n 's/^Mode: //p' || true; }

serving() { [ -n "$(mode "$1")" ]; }

# wait_serving NAME PORT PIDFILE LOG: until the server on PORT serves (it binds its port before it
# has loaded its data or found a quorum).
wait_serving() {
  local i
  for ((i = 0; i < START_TIMEOUT * 5; i++)); do
    serving "$2" && { echo "$1 serves ($(mode "$2"))" >&2; return 0; }
    pid_alive "$3" || { tail -30 "$4" >&2; die "$1 exited during startup"; }
    sleep 0.2
  done
  tail -30 "$4" >&2
  die "$1 did not serve on 127.0.0.1:$2 within ${START_TIMEOUT}s"
}

cmd_run() {
  fetch_jars "$HERE/pom.xml" "$LIB"
  configure "$HOME_DIR" "$PORT"
  mapfile -t args < <(java_args "$HOME_DIR")
  exec java "${args[@]}"
}

cmd_start() {
  pid_alive "$PIDFILE" || { fetch_jars "$HERE/pom.xml" "$LIB"; configure "$HOME_DIR" "$PORT"; }
  mapfile -t args < <(java_args "$HOME_DIR")
  start_daemon zookeeper "$PIDFILE" "$PORT" "$HOME_DIR/logs/stdout.log" "$START_TIMEOUT" java "${args[@]}"
  wait_serving zookeeper "$PORT" "$PIDFILE" "$HOME_DIR/logs/stdout.log"
}

# --- the ensemble --------------------------------------------------------------------------------

member_dir() { echo "$ENSEMBLE_DIR/$1"; }
member_port() { echo $((BASE_PORT + $1)); }
member_pidfile() { echo "$ENSEMBLE_DIR/$1/zookeeper.pid"; }

check_member() { [[ ${1:-} =~ ^[1-3]$ ]] || die "zookeeper: no ensemble member '${1:-}' (1..3)"; }

# launch_member N: start member N's JVM and wait until its client port accepts connections.
launch_member() {
  local dir pidfile
  dir=$(member_dir "$1")
  pidfile=$(member_pidfile "$1")
  pid_alive "$pidfile" || configure "$dir" "$(member_port "$1")" "$1"
  mapfile -t args < <(java_args "$dir")
  start_daemon "zookeeper-$1" "$pidfile" "$(member_port "$1")" "$dir/logs/stdout.log" "$START_TIMEOUT" \
    java "${args[@]}"
}

# The members serving clients (leader or follower), one per line.
serving_members() {
  local i
  for i in "${MEMBERS[@]}"; do
    case $(mode "$(member_port "$i")") in leader | follower) echo "$i" ;; esac
  done
}

has_quorum() { [ "$(serving_members | wc -l)" -ge 2 ]; }

ensemble_start() {
  local i pids=() failed=0
  fetch_jars "$HERE/pom.xml" "$LIB"
  if [ -n "${1:-}" ]; then
    check_member "$1"
    launch_member "$1"
    wait_serving "zookeeper-$1" "$(member_port "$1")" "$(member_pidfile "$1")" "$(member_dir "$1")/logs/stdout.log"
    return 0
  fi
  for i in "${MEMBERS[@]}"; do  # in parallel: a member waits for the others to form a quorum
    launch_member "$i" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || failed=1; done
  [ "$failed" = 0 ] || die "zookeeper: an ensemble member did not start"
  for ((i = 0; i < START_TIMEOUT * 5; i++)); do
    has_quorum && { ensemble_status >&2 || true; return 0; }
    sleep 0.2
  done
  ensemble_status >&2 || true
  die "zookeeper: the ensemble formed no quorum within ${START_TIMEOUT}s"
}

# ensemble_each COMMAND [N]: COMMAND PIDFILE NAME for member N, or for every member at once.
ensemble_each() {
  local cmd=$1 i
  if [ -n "${2:-}" ]; then
    check_member "$2"
    "$cmd" "$(member_pidfile "$2")" "zookeeper-$2"
  else
    for i in "${MEMBERS[@]}"; do "$cmd" "$(member_pidfile "$i")" "zookeeper-$i" & done
    wait
  fi
}

stop_member() { stop_pid "$1" "$2" 30; }
kill_member() { kill_daemon "$1"; echo "$2 killed" >&2; }

ensemble_status() {
  local i m
  for i in "${MEMBERS[@]}"; do
    m=$(mode "$(member_port "$i")")
    if [ -n "$m" ]; then
      echo "$i 127.0.0.1:$(member_port "$i") $m"
    elif port_open 127.0.0.1 "$(member_port "$i")"; then
      echo "$i 127.0.0.1:$(member_port "$i") not-serving"
    else
      echo "$i 127.0.0.1:$(member_port "$i") down"
    fi
  done
  has_quorum
}

cmd_ensemble() {
  case ${1:-} in
    start) ensemble_start "${2:-}" ;;
    stop) ensemble_each stop_member "${2:-}" ;;
    kill) ensemble_each kill_member "${2:-}" ;;
    status) ensemble_status ;;
    wipe) ensemble_each stop_member; rm -rf "${ENSEMBLE_DIR:?}"/*/data ;;
    *) die "usage: $0 ensemble start [N]|stop [N]|kill [N]|status|wipe" ;;
  esac
}

case ${1:-} in
  start) cmd_start ;;
  stop) stop_pid "$PIDFILE" zookeeper 30 ;;
  kill) kill_daemon "$PIDFILE" ;;
  status) serving "$PORT" ;;
  run) cmd_run ;;
  fetch) fetch_jars "$HERE/pom.xml" "$LIB" ;;
  wipe) stop_pid "$PIDFILE" zookeeper 30; rm -rf "${HOME_DIR:?}"/data ;;
  ensemble) shift; cmd_ensemble "$@" ;;
  *) die "usage: $0 start|stop|kill|status|run|fetch|wipe|ensemble start [N]|stop [N]|kill [N]|status|wipe" ;;
esac
