#!/usr/bin/env bash
# Prometheus on loopback, from Debian's package: the server the metrics tests query with PromQL,
# and a way to watch a local cluster (README, "Metrics").
#
#   deploy/prometheus/prometheus.sh start     install (first time), configure, start, wait until ready
#   deploy/prometheus/prometheus.sh stop      SIGTERM, SIGKILL after 30 s
#   deploy/prometheus/prometheus.sh status    exit 0 when the server answers /-/ready
#   deploy/prometheus/prometheus.sh targets   the folder of scrape targets (see below)
#   deploy/prometheus/prometheus.sh wipe      stop and delete the data
#
# What it scrapes: every file <targets>/*.json, in Prometheus's file_sd format
# ([{"targets": ["127.0.0.1:9091"], "labels": {"job": "legato", "role": "history"}}]), read again
# as soon as it changes; so a test or an operator adds processes without a restart.
#
# Listens on 127.0.0.1:$PROMETHEUS_PORT (default 9090); data in $LEGATO_DEPLOY_DIR/prometheus.
# Environment: PROMETHEUS_PORT, PROMETHEUS_SCRAPE_INTERVAL (default 1s: tests watch series move),
# PROMETHEUS_RETENTION (default 2h), LEGATO_DEPLOY_DIR (state; default <repo>/.deploy).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

HOME_DIR=$LEGATO_DEPLOY_DIR/prometheus
TARGETS=$HOME_DIR/targets
PIDFILE=$HOME_DIR/prometheus.pid
PORT=${PROMETHEUS_PORT:-9090}
INTERVAL=${PROMETHEUS_SCRAPE_INTERVAL:-1s}
RETENTION=${PROMETHEUS_RETENTION:-2h}
START_TIMEOUT=${PROMETHEUS_START_TIMEOUT:-60}

need_prometheus() {
  command -v prometheus >/dev/null && return 0
  echo "deploy: installing Prometheus (Debian package; its service is not started)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    prometheus >/dev/null
  # Debian's package would run its own server on :9090 where an init system exists; this one is ours.
  if pid_alive /run/prometheus/prometheus.pid 2>/dev/null; then
    kill "$(cat /run/prometheus/prometheus.pid)" || true
  fi
}

configure() {
  mkdir -p "$HOME_DIR/data" "$TARGETS"
  cat >"$HOME_DIR/prometheus.yml" <<YAML
global:
  scrape_interval: $INTERVAL
  scrape_timeout: $INTERVAL
  evaluation_interval: $INTERVAL
scrape_configs:
  - job_name: legato
    file_sd_configs:
      - files: ["$TARGETS/*.json"]
YAML
}

ready() { curl -fsS "http://127.0.0.1:$PORT/-/ready" >/dev/null 2>&1; }

case "${1:-}" in
  start)
    need_prometheus
    configure
    if pid_alive "$PIDFILE" && ready; then echo "prometheus is running (127.0.0.1:$PORT)" >&2; exit 0; fi
    start_daemon prometheus "$PIDFILE" "$PORT" "$HOME_DIR/prometheus.log" "$START_TIMEOUT" \
      prometheus --config.file="$HOME_DIR/prometheus.yml" --storage.tsdb.path="$HOME_DIR/data" \
      --storage.tsdb.retention.time="$RETENTION" --web.listen-address="127.0.0.1:$PORT" \
      --web.enable-lifecycle
    for ((i = 0; i < START_TIMEOUT * 5; i++)); do ready && exit 0; sleep 0.2; done
    die "prometheus did not become ready on 127.0.0.1:$PORT within ${START_TIMEOUT}s"
    ;;
  stop) stop_pid "$PIDFILE" prometheus 30 ;;
  status) ready ;;
  targets) echo "$TARGETS" ;;
  wipe) stop_pid "$PIDFILE" prometheus 30; rm -rf "$HOME_DIR" ;;
  *) echo "usage: $0 start|stop|status|targets|wipe" >&2; exit 2 ;;
esac
