#!/usr/bin/env bash
# Submit the winnow pipeline with spark-submit.
#
#   deploy/submit.sh [spark-submit options] -- [pipeline options]
#   deploy/submit.sh --master 'local[2]' -- --input pairs.parquet --output out/
#
# Zips jobs/ udfs/ schemas/ into build/winnow-src.zip for --py-files, so
# executors import the same code as the driver. Executors still need the
# Python packages (pyspark's, pandas, pyarrow, spaCy + model, cld3-py,
# better-profanity): install them on every node, or ship an environment
# archive with --archives (see README, "Running on a cluster").
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
submit_args=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do submit_args+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
mkdir -p "$here/build"
zip_path="$here/build/winnow-src.zip"
rm -f "$zip_path"
(cd "$here" && python3 -m zipfile -c "$zip_path" jobs udfs schemas >/dev/null)
SPARK_SUBMIT=${SPARK_SUBMIT:-spark-submit}
exec "$SPARK_SUBMIT" \
  --conf spark.sql.execution.arrow.pyspark.enabled=true \
  --conf spark.sql.adaptive.enabled=true \
  --py-files "$zip_path" \
  ${submit_args[@]+"${submit_args[@]}"} \
  "$here/jobs/pipeline.py" "$@"
