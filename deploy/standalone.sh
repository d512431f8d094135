#!/usr/bin/env bash
# A local Spark standalone cluster on 127.0.0.1: one master and two workers, started with the
# spark-class launcher inside the pyspark wheel (no Spark download needed).
#
#   deploy/standalone.sh start           # prints the master URL, spark://127.0.0.1:<port>
#   deploy/standalone.sh stop
#   deploy/standalone.sh worker-kill N   # SIGKILL worker N's JVM (a lost machine, for fault tests)
#   deploy/standalone.sh worker-start N  # start worker N again; returns once the master registered it
#
# worker-kill: an executor JVM watches the worker that launched it (Spark's WorkerWatcher) and
# exits within a second once that worker's connection drops, so a running executor dies with its
# worker, as on a lost machine; the master tells the driver, which logs "Lost executor N ... worker
# lost" and reruns the tasks (and recomputes the cached blocks) it had on the other workers.
# Measured here: an executor killed while running tasks exits 0.3 s after its worker. One caveat,
# also measured: an executor still starting up (it connects to its worker ~10 s after launch on
# this 2-core machine) misses the disconnect and lingers until its application ends; the driver has
# dropped it by then, so it runs nothing. The command waits for the worker's executor JVMs and
# prints one line each, "exited by itself after S s" or, after EXECUTOR_GRACE seconds (default 30),
# "still alive ...: killed it". worker-start N brings the worker back (a new worker id, same work
# dir) and returns once the master registered it, so a test can kill a worker and leave the
# cluster usable for the next test without a restart (a start costs ~15-20 s).
#
# Then: deploy/submit.sh --master spark://127.0.0.1:7077 --conf spark.driver.host=127.0.0.1 -- --input ...
#
# Environment: PYTHON (default .venv/bin/python, the interpreter whose pyspark runs the cluster),
# STANDALONE_DIR (default build/standalone: pid files, logs, work dirs), MASTER_PORT (7077),
# WORKERS (2), WORKER_CORES (1 each), WORKER_MEMORY (2g each), EXECUTOR_GRACE (30 s, worker-kill).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$here/.venv/bin/python}
dir=${STANDALONE_DIR:-$here/build/standalone}
port=${MASTER_PORT:-7077}
workers=${WORKERS:-2}
cores=${WORKER_CORES:-1}
memory=${WORKER_MEMORY:-2g}
url="spark://127.0.0.1:$port"
grace=${EXECUTOR_GRACE:-30}

spark_env() {  # the pyspark wheel is the Spark installation
  SPARK_HOME=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$python
}

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

alive() {  # pid: a live process (a killed one nobody has reaped yet is a zombie, not alive)
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ "$state" != Z* ]]
}

running() {  # pid file: whether its process is alive
  [ -f "$1" ] && alive "$(cat "$1")"
}

launch_worker() {  # worker number
  mkdir -p "$dir/work-$1"
  launch "worker-$1" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --webui-port 0 \
    --cores "$cores" --memory "$memory" --work-dir "$dir/work-$1" "$url"
}

worker_number() {  # the N of worker-kill / worker-start, checked
  if ! [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || [ "$1" -gt "$workers" ]; then
    echo "usage: deploy/standalone.sh $2 N (1..$workers)" >&2
    exit 2
  fi
}

case "${1:-}" in
start)
  spark_env
  mkdir -p "$dir"
  if running "$dir/master.pid"; then
    echo "standalone: already running ($url); deploy/standalone.sh stop first" >&2
    exit 1
  fi
  launch master org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port 0
  wait_for "$dir/master.log" "Starting Spark master at" 1 60
  for ((w = 1; w <= workers; w++)); do launch_worker "$w"; done
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
worker-kill)
  n=${2:-}
  worker_number "$n" worker-kill
  if ! running "$dir/worker-$n.pid"; then
    echo "standalone: worker $n is not running" >&2
    exit 1
  fi
  pid=$(cat "$dir/worker-$n.pid")
  executors=$(pgrep -x -P "$pid" java || true)  # spark-class execs java; executor JVMs are its children
  kill -KILL "$pid"
  while alive "$pid"; do sleep 0.1; done
  rm -f "$dir/worker-$n.pid"
  echo "standalone: worker $n (pid $pid) killed"
  for child in $executors; do
    for ((i = 0; i < grace * 10; i++)); do alive "$child" || break; sleep 0.1; done
    if alive "$child"; then
      pkill -KILL -P "$child" 2>/dev/null || true
      kill -KILL "$child" 2>/dev/null || true
      echo "standalone: executor pid $child of worker $n was still alive after ${grace}s: killed it"
    else
      echo "standalone: executor pid $child of worker $n exited by itself after $((i / 10)).$((i % 10))s"
    fi
  done
  ;;
worker-start)
  n=${2:-}
  worker_number "$n" worker-start
  if ! running "$dir/master.pid"; then
    echo "standalone: no master running; deploy/standalone.sh start first" >&2
    exit 1
  fi
  if running "$dir/worker-$n.pid"; then
    echo "standalone: worker $n is already running" >&2
    exit 1
  fi
  spark_env
  registered=$(grep -c "Registering worker" "$dir/master.log" || true)
  [ -f "$dir/worker-$n.log" ] && mv "$dir/worker-$n.log" "$dir/worker-$n.log.$(date +%s)"
  launch_worker "$n"
  wait_for "$dir/master.log" "Registering worker" $((registered + 1)) 90
  echo "standalone: worker $n (pid $(cat "$dir/worker-$n.pid")) registered with $url"
  ;;
*)
  echo "usage: deploy/standalone.sh start|stop|worker-kill N|worker-start N" >&2
  exit 2
  ;;
esac
