#!/usr/bin/env bash
# A single Apache Kafka 3.9 node (broker and KRaft controller in one) on loopback, from Maven
# Central's jars; no ZooKeeper.
#
#   deploy/kafka/kafka.sh start    fetch (first time), format storage (first time), start, wait for the port
#   deploy/kafka/kafka.sh stop     SIGTERM (controlled shutdown), SIGKILL after a minute
#   deploy/kafka/kafka.sh kill     SIGKILL
#   deploy/kafka/kafka.sh status   exit 0 when the broker port answers
#   deploy/kafka/kafka.sh run      in the foreground
#   deploy/kafka/kafka.sh wipe     stop and delete the data
#
# Environment: KAFKA_PORT (default 9092), KAFKA_CONTROLLER_PORT (default 9093), KAFKA_HEAP
# (default 512M), LEGATO_DEPLOY_DIR (state; default <repo>/.deploy).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

HERE=$DEPLOY_SRC/kafka
HOME_DIR=$LEGATO_DEPLOY_DIR/kafka
LIB=$HOME_DIR/lib
PIDFILE=$HOME_DIR/kafka.pid
PORT=${KAFKA_PORT:-9092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
HEAP=${KAFKA_HEAP:-512M}
START_TIMEOUT=${KAFKA_START_TIMEOUT:-120}

configure() {
  mkdir -p "$HOME_DIR"/{conf,data,logs}
  sed -e "s|@HOME@|$HOME_DIR|g" -e "s|@PORT@|$PORT|g" -e "s|@CONTROLLER_PORT@|$CONTROLLER_PORT|g" \
    "$HERE/server.properties.in" >"$HOME_DIR/conf/server.properties"
  sed -e "s|@HOME@|$HOME_DIR|g" "$HERE/log4j.properties.in" >"$HOME_DIR/conf/log4j.properties"
}

java_base() {
  cat <<ARGS
-Xms$HEAP
-Xmx$HEAP
-XX:+UseG1GC
-XX:MaxGCPauseMillis=20
-Djava.awt.headless=true
-Dlog4j.configuration=file:$HOME_DIR/conf/log4j.properties
-Dkafka.logs.dir=$HOME_DIR/logs
-cp
$LIB/*
ARGS
}

# Format the KRaft storage once (the cluster id is kept with the data).
format() {
  [ -f "$HOME_DIR/data/meta.properties" ] && return 0
  local id
  mapfile -t base < <(java_base)
  id=$(java "${base[@]}" kafka.tools.StorageTool random-uuid)
  java "${base[@]}" kafka.tools.StorageTool format -t "$id" -c "$HOME_DIR/conf/server.properties" \
    >"$HOME_DIR/logs/format.log" 2>&1 || { cat "$HOME_DIR/logs/format.log" >&2; die "kafka: formatting storage failed"; }
}

prepare() {
  fetch_jars "$HERE/pom.xml" "$LIB"
  configure
  format
}

cmd_run() {
  prepare
  mapfile -t base < <(java_base)
  exec java "${base[@]}" kafka.Kafka "$HOME_DIR/conf/server.properties"
}

cmd_start() {
  pid_alive "$PIDFILE" || prepare
  mapfile -t base < <(java_base)
  start_daemon kafka "$PIDFILE" "$PORT" "$HOME_DIR/logs/stdout.log" "$START_TIMEOUT" \
    java "${base[@]}" kafka.Kafka "$HOME_DIR/conf/server.properties"
}

case ${1:-} in
  start) cmd_start ;;
  stop) stop_pid "$PIDFILE" kafka 60 ;;
  kill) kill_daemon "$PIDFILE" ;;
  status) port_open 127.0.0.1 "$PORT" ;;
  run) cmd_run ;;
  fetch) fetch_jars "$HERE/pom.xml" "$LIB" ;;
  wipe) stop_pid "$PIDFILE" kafka 60; rm -rf "${HOME_DIR:?}"/data ;;
  *) die "usage: $0 start|stop|kill|status|run|fetch|wipe" ;;
esac
