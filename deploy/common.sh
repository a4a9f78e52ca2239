# Shared helpers of the deploy/ scripts (sourced, not run).
# State lives under $LEGATO_DEPLOY_DIR (default: <repo>/.deploy), one folder per server.

DEPLOY_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LEGATO_DEPLOY_DIR=${LEGATO_DEPLOY_DIR:-$(dirname "$DEPLOY_SRC")/.deploy}

die() { echo "$*" >&2; exit 1; }

# Install the JDK and Maven from Debian if this machine lacks them.
need_java_and_maven() {
  command -v java >/dev/null && command -v mvn >/dev/null && return 0
  echo "deploy: installing a JDK and Maven (Debian packages)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    openjdk-17-jdk-headless maven >/dev/null
}

# fetch_jars POM DIR: copy the artifact named by POM and all its dependencies into DIR.
# Maven caches them in ~/.m2, so a second fetch needs no network.
fetch_jars() {
  local pom=$1 dir=$2
  [ -f "$dir/.complete" ] && [ "$dir/.complete" -nt "$pom" ] && return 0
  need_java_and_maven
  rm -rf "$dir" && mkdir -p "$dir"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DoutputDirectory="$dir" -DincludeScope=runtime \
    || die "deploy: mvn could not fetch the jars of $pom"
  touch "$dir/.complete"
}

# port_open HOST PORT: true once something accepts TCP connections there.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# pid_alive PIDFILE
pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid PIDFILE NAME [SECONDS]: SIGTERM, wait, then SIGKILL.
stop_pid() {
  local pidfile=$1 name=$2 secs=${3:-60} pid i
  pid_alive "$pidfile" || { rm -f "$pidfile"; echo "$name is not running" >&2; return 0; }
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; echo "$name stopped" >&2; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  echo "$name killed after ${secs}s" >&2
}

# start_daemon NAME PIDFILE PORT LOG TIMEOUT COMMAND...: start COMMAND in the background (unless
# PIDFILE's process runs), then wait until 127.0.0.1:PORT accepts connections.
start_daemon() {
  local name=$1 pidfile=$2 port=$3 log=$4 timeout=$5 i
  shift 5
  if pid_alive "$pidfile"; then
    port_open 127.0.0.1 "$port" && { echo "$name is running (127.0.0.1:$port)" >&2; return 0; }
  else
    setsid nohup "$@" >"$log" 2>&1 </dev/null &  # its own session: not stopped with the caller
    echo $! >"$pidfile"
  fi
  for ((i = 0; i < timeout * 5; i++)); do
    port_open 127.0.0.1 "$port" && { echo "$name is up (127.0.0.1:$port)" >&2; return 0; }
    pid_alive "$pidfile" || { tail -30 "$log" >&2; die "$name exited during startup"; }
    sleep 0.2
  done
  tail -30 "$log" >&2
  die "$name did not answer on 127.0.0.1:$port within ${timeout}s"
}

# kill_daemon PIDFILE: SIGKILL, and wait until the process is gone (so a restart gets the ports).
kill_daemon() {
  pid_alive "$1" && kill -9 "$(cat "$1")"
  while pid_alive "$1"; do sleep 0.1; done
  rm -f "$1"
}
