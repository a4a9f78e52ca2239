#!/usr/bin/env bash
# A single-node Apache Cassandra 5.0 on loopback, from Maven Central's jars.
#
#   deploy/cassandra/cassandra.sh start    fetch (first time), configure, start, wait until CQL answers
#   deploy/cassandra/cassandra.sh stop     SIGTERM (Cassandra drains), SIGKILL after a minute
#   deploy/cassandra/cassandra.sh kill     SIGKILL (fault tests)
#   deploy/cassandra/cassandra.sh status   exit 0 when CQL answers
#   deploy/cassandra/cassandra.sh run      in the foreground
#   deploy/cassandra/cassandra.sh wipe     stop and delete the data
#
# Environment: CASSANDRA_PORT (CQL, default 9042), CASSANDRA_STORAGE_PORT (default 7000),
# CASSANDRA_HEAP (default 1G), CASSANDRA_COMMITLOG_SYNC (group, the default: a write is acknowledged
# once synced; periodic: synced every 100 ms, see cassandra.yaml.in), CASSANDRA_COMMITLOG_GROUP_WINDOW
# (group mode: the longest wait between syncs, default 2ms), CASSANDRA_TIMER_SLACK (how late the
# kernel may wake the node's threads from a timed sleep, default 500us, at most 10ms; see
# TIMER_SLACK below), LEGATO_DEPLOY_DIR (state; default <repo>/.deploy).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

HERE=$DEPLOY_SRC/cassandra
HOME_DIR=$LEGATO_DEPLOY_DIR/cassandra
LIB=$HOME_DIR/lib
PIDFILE=$HOME_DIR/cassandra.pid
PORT=${CASSANDRA_PORT:-9042}
STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-7000}
HEAP=${CASSANDRA_HEAP:-1G}
START_TIMEOUT=${CASSANDRA_START_TIMEOUT:-180}
COMMITLOG_SYNC=${CASSANDRA_COMMITLOG_SYNC:-group}
GROUP_WINDOW=${CASSANDRA_COMMITLOG_GROUP_WINDOW:-2ms}
[[ $GROUP_WINDOW =~ ^[0-9]+(ms|s)$ ]] ||
  die "CASSANDRA_COMMITLOG_GROUP_WINDOW is '$GROUP_WINDOW'; it is a duration such as 2ms or 1s"
case $COMMITLOG_SYNC in
  group) COMMITLOG_SYNC_SETTING="commitlog_sync_group_window: $GROUP_WINDOW" ;;
  periodic) COMMITLOG_SYNC_SETTING="commitlog_sync_period: 100ms" ;;
  *) die "CASSANDRA_COMMITLOG_SYNC is '$COMMITLOG_SYNC'; it can be group (the default) or periodic" ;;
esac

# The node's timer slack, in nanoseconds. Cassandra's shared thread pool keeps a worker that ran out of
# work polling for more with 10 us sleeps (SEPWorker.doWaitSpin) for 10 ms after the last task, so
# under a steady trickle of requests the node wakes a thread 16,000 times a second whatever the load:
# on two cores shared with the cluster's other processes, most of the node's context switches and a
# third of its CPU (README "Load testing"). A wider slack lets the kernel batch those wake-ups. The
# kernel gives a process its parent's slack, so the shell sets its own before it starts java.
TIMER_SLACK=${CASSANDRA_TIMER_SLACK:-500us}
MAX_TIMER_SLACK_NS=10000000
timer_slack_ns() {
  [[ $TIMER_SLACK == 0 ]] && { echo 0; return; }
  [[ $TIMER_SLACK =~ ^([0-9]{1,9})(ns|us|ms)$ ]] ||
    die "CASSANDRA_TIMER_SLACK is '$TIMER_SLACK'; it is a duration such as 500us or 1ms (0: the kernel's default)"
  local n=$((10#${BASH_REMATCH[1]})) unit=${BASH_REMATCH[2]}
  case $unit in us) n=$((n * 1000)) ;; ms) n=$((n * 1000000)) ;; esac
  ((n <= MAX_TIMER_SLACK_NS)) ||
    die "CASSANDRA_TIMER_SLACK is '$TIMER_SLACK'; at most 10ms (every timed wait of the node is late by up to that)"
  echo "$n"
}
TIMER_SLACK_NS=$(timer_slack_ns)

# Give this shell, and so the java it starts, the timer slack; say so and go on where the kernel
# refuses (no /proc/PID/timerslack_ns before Linux 4.6; a container without CAP_SYS_NICE).
set_timer_slack() {
  echo "$TIMER_SLACK_NS" 2>/dev/null >"/proc/$$/timerslack_ns" ||
    echo "cassandra: could not set the timer slack to $TIMER_SLACK (/proc/$$/timerslack_ns); the node keeps the kernel's default" >&2
}

configure() {
  mkdir -p "$HOME_DIR"/{conf,data,commitlog,saved_caches,hints,cdc,logs}
  sed -e "s|@HOME@|$HOME_DIR|g" -e "s|@PORT@|$PORT|g" -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" \
    -e "s|@COMMITLOG_SYNC@|$COMMITLOG_SYNC|g" -e "s|@COMMITLOG_SYNC_SETTING@|$COMMITLOG_SYNC_SETTING|g" \
    "$HERE/cassandra.yaml.in" >"$HOME_DIR/conf/cassandra.yaml"
  sed -e "s|@HOME@|$HOME_DIR|g" "$HERE/logback.xml.in" >"$HOME_DIR/conf/logback.xml"
}

# The JVM flags: jvm17-server.options' module exports/opens, the jamm agent, a small heap.
java_args() {
  local jamm
  jamm=$(ls "$LIB"/jamm-*.jar | head -1)
  grep -v '^\s*#' "$HERE/jvm17.options" | grep -v '^\s*$'
  cat <<ARGS
-Xms$HEAP
-Xmx$HEAP
-javaagent:$jamm
-Dcassandra.config=file://$HOME_DIR/conf/cassandra.yaml
-Dcassandra.storagedir=$HOME_DIR
-Dcassandra.logdir=$HOME_DIR/logs
-Dlogback.configurationFile=$HOME_DIR/conf/logback.xml
-Dcassandra-foreground=yes
-Dcassandra.skip_wait_for_gossip_to_settle=0
-Dcassandra.ring_delay_ms=100
-Dcassandra.superuser_setup_delay_ms=0
-Dcassandra.jmx.local.port=0
-cp
$LIB/*
org.apache.cassandra.service.CassandraDaemon
ARGS
}

prepare() {
  fetch_jars "$HERE/pom.xml" "$LIB"
  configure
}

cmd_run() {
  prepare
  mapfile -t args < <(java_args)
  set_timer_slack
  exec java "${args[@]}"
}

cmd_start() {
  pid_alive "$PIDFILE" || prepare
  mapfile -t args < <(java_args)
  set_timer_slack
  start_daemon cassandra "$PIDFILE" "$PORT" "$HOME_DIR/logs/stdout.log" "$START_TIMEOUT" java "${args[@]}"
}

case ${1:-} in
  start) cmd_start ;;
  stop) stop_pid "$PIDFILE" cassandra 60 ;;
  kill) kill_daemon "$PIDFILE" ;;
  status) port_open 127.0.0.1 "$PORT" ;;
  run) cmd_run ;;
  fetch) fetch_jars "$HERE/pom.xml" "$LIB" ;;
  wipe) stop_pid "$PIDFILE" cassandra 60; rm -rf "${HOME_DIR:?}"/{data,commitlog,saved_caches,hints,cdc} ;;
  *) die "usage: $0 start|stop|kill|status|run|fetch|wipe" ;;
esac
