#!/usr/bin/env bash
# Submit the winnow pipeline with spark-submit.
#
#   deploy/submit.sh [spark-submit options] -- [pipeline options]
#   deploy/submit.sh --master 'local[2]' -- --input pairs.parquet --output out/
#   WINNOW_ENV_ARCHIVE=build/winnow-env.tar.gz deploy/submit.sh --master yarn --deploy-mode cluster -- ...
#
# Zips the *.py files of jobs/ udfs/ schemas/ into build/winnow-src.zip for --py-files, so
# executors import the same code as the driver, and passes the cluster settings below ahead
# of the caller's options: a later --conf of the same key wins in spark-submit, so any of them
# can be overridden on the command line.
#
# Executors also need winnow's Python packages (pandas, pyarrow, spaCy + model, cld3-py, ...):
# installed on every node or in the cluster image (deploy/Dockerfile), or shipped with
# WINNOW_ENV_ARCHIVE=<archive from deploy/pack-env.sh, a local path or a URL such as
# hdfs:///...>: it is passed as --archives <archive>#env and the executors run ./env/bin/python.
# The driver runs the archive's Python too in cluster deploy mode (it runs in a container next
# to the executors); in client mode it runs locally: PYSPARK_DRIVER_PYTHON, else this
# checkout's .venv/bin/python, else python3 (its Python minor version must match the archive's).
#
# Environment: SPARK_SUBMIT (default spark-submit), WINNOW_ENV_ARCHIVE, PYSPARK_DRIVER_PYTHON.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
submit_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do submit_args+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift

mkdir -p "$here/build"
zip_path="$here/build/winnow-src.zip"
rm -f "$zip_path"
# Sources only: no __pycache__, no stray files from the working tree.
(cd "$here" && python3 - "$zip_path" <<'EOF'
import sys
import zipfile
from pathlib import Path

with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as archive:
    for package in ("jobs", "udfs", "schemas"):
        for path in sorted(Path(package).rglob("*.py")):
            archive.write(path)
EOF
)

defaults=(
  # Rows per Arrow batch into the Python UDFs: run.arrow_batch_size's default (jobs/config.py).
  # The job sets it again from its config when the session starts, so change it with
  # `-- --set run.arrow_batch_size=N`; a --conf here is overwritten.
  --conf spark.sql.execution.arrow.maxRecordsPerBatch=5000
  # Off-heap room for the Python workers, one per executor core: ~0.3 GB (CLD3 + spaCy
  # en_core_web_sm) + ~1 GB (image stage worst case, README "Memory") = 1.3 GB, x 4 cores
  # = 5.2 GB, + ~0.4 GB for the JVM's own native memory. Sized for --executor-cores 4;
  # scale by 1.3 GB per core. YARN and Kubernetes size the container with it.
  --conf spark.executor.memoryOverhead=6g
  # Re-run straggling tasks elsewhere (a slow or dying node). The rest keep speculation from
  # chasing slow image hosts: a fetch is bounded, (1 + fetch.retries) x fetch.timeout plus
  # retry waits of at most fetch.max_retry_after = 3 x 10 s + 2 x 10 s = 50 s per row, with 16
  # rows in flight per task. So a task is a straggler only when it runs 3x the stage's median
  # (multiplier), among the last 10% of tasks (quantile), and for more than 2 minutes (over
  # two worst-case rows); a speculative copy fetches every URL of its task again.
  --conf spark.speculation=true
  --conf spark.speculation.multiplier=3
  --conf spark.speculation.quantile=0.9
  --conf spark.speculation.minTaskRuntime=2min
  # A bad URL, server or image is a rejected row, never a task failure, so failures here are
  # lost executors and nodes; tolerate more of them on a long run (Spark's default is 4).
  --conf spark.task.maxFailures=8
)

env_args=()
if [ -n "${WINNOW_ENV_ARCHIVE:-}" ]; then
  archive=$WINNOW_ENV_ARCHIVE
  if [[ $archive != *://* ]]; then
    [ -f "$archive" ] || { echo "submit.sh: WINNOW_ENV_ARCHIVE=$archive: no such file (deploy/pack-env.sh)" >&2; exit 2; }
    archive=$(cd "$(dirname "$archive")" && pwd)/$(basename "$archive")
  fi
  cluster_mode=false
  master=
  for ((i = 0; i < ${#submit_args[@]}; i++)); do
    next=${submit_args[$((i + 1))]:-}
    case "${submit_args[$i]}" in
    --deploy-mode=cluster | spark.submit.deployMode=cluster) cluster_mode=true ;;
    --deploy-mode) [ "$next" = cluster ] && cluster_mode=true ;;
    --master) master=$next ;;
    --master=*) master=${submit_args[$i]#--master=} ;;
    esac
  done
  # Local mode unpacks --archives under a temporary folder, not in the task's working
  # directory, so ./env/bin/python does not exist there: fail now, not in the first task.
  if [[ $master == local* ]]; then
    echo "submit.sh: WINNOW_ENV_ARCHIVE does not work with --master $master (local mode does not unpack it" \
      "into the working directory); use a cluster (deploy/standalone.sh) or run without it" >&2
    exit 2
  fi
  # Spark unpacks the archive into ./env in every executor's (and a cluster-mode driver's)
  # working directory. Another --archives on the command line replaces this one: list both there.
  env_args+=(--archives "$archive#env" --conf spark.pyspark.python=./env/bin/python)
  if [ "$cluster_mode" = false ]; then
    driver_python=${PYSPARK_DRIVER_PYTHON:-}
    if [ -z "$driver_python" ]; then
      if [ -x "$here/.venv/bin/python" ]; then driver_python=$here/.venv/bin/python; else driver_python=$(command -v python3); fi
    fi
    env_args+=(--conf "spark.pyspark.driver.python=$driver_python")
  fi
fi

SPARK_SUBMIT=${SPARK_SUBMIT:-spark-submit}
exec "$SPARK_SUBMIT" \
  "${defaults[@]}" \
  ${env_args[@]+"${env_args[@]}"} \
  --py-files "$zip_path" \
  ${submit_args[@]+"${submit_args[@]}"} \
  "$here/jobs/pipeline.py" "$@"
