#!/usr/bin/env bash
# A local Spark standalone cluster on 127.0.0.1: one master and two workers, started with the
# spark-class launcher inside the pyspark wheel (no Spark download needed).
#
#   deploy/standalone.sh start   # prints the master URL, spark://127.0.0.1:<port>
#   deploy/standalone.sh stop
#
# Then: deploy/submit.sh --master spark://127.0.0.1:7077 --conf spark.driver.host=127.0.0.1 -- --input ...
#
# Environment: PYTHON (default .venv/bin/python, the interpreter whose pyspark runs the cluster),
# STANDALONE_DIR (default build/standalone: pid files, logs, work dirs), MASTER_PORT (7077),
# WORKERS (2), WORKER_CORES (1 each), WORKER_MEMORY (2g each).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
dir=${STANDALONE_DIR:-$here/build/standalone}
port=${MASTER_PORT:-7077}
workers=${WORKERS:-2}
cores=${WORKER_CORES:-1}
memory=${WORKER_MEMORY:-2g}
url="spark://127.0.0.1:$port"

launch() {  # name, then the spark-class arguments: runs in the background, pid in $dir/<name>.pid
  local name=$1
  shift
  nohup "$SPARK_HOME/bin/spark-class" "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

wait_for() {  # file, pattern, count, seconds
  local i
  for ((i = 0; i < $4 * 2; i++)); do
    if [ "$(grep -c "$2" "$1" 2>/dev/null || true)" -ge "$3" ]; then return 0; fi
    sleep 0.5
  done
  echo "standalone: timed out waiting for '$2' in $1" >&2
  tail -20 "$1" >&2
  return 1
}

case "${1:-}" in
start)
  SPARK_HOME=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$python
  mkdir -p "$dir"
  if [ -f "$dir/master.pid" ] && kill -0 "$(cat "$dir/master.pid")" 2>/dev/null; then
    echo "standalone: already running ($url); deploy/standalone.sh stop first" >&2
    exit 1
  fi
  launch master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port 0
  wait_for "$dir/master.log" "Starting Spark master at" 1 60
  for ((w = 1; w <= workers; w++)); do
    mkdir -p "$dir/work-$w"
    launch "worker-$w" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --webui-port 0 \
      --cores "$cores" --memory "$memory" --work-dir "$dir/work-$w" "$url"
  done
  wait_for "$dir/master.log" "Registering worker" "$workers" 90
  echo "$url"
  ;;
stop)
  for pidfile in "$dir"/worker-*.pid "$dir"/master.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    # spark-class execs java: the pid is the JVM; its executors are its children.
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  ;;
*)
  echo "usage: deploy/standalone.sh start|stop" >&2
  exit 2
  ;;
esac
