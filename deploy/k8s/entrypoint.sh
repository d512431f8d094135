#!/usr/bin/env bash
# Entrypoint of the winnow image (deploy/Dockerfile) under Spark on Kubernetes. Spark starts
# the driver pod with `driver <spark-submit arguments>` and every executor pod with `executor`,
# describing the executor in SPARK_* environment variables; any other command runs as given
# (`docker run winnow:latest winnow run --help`).
set -euo pipefail

case "${1:-}" in
driver)
  shift
  # The pod is already the driver: submit to ourselves in client mode, listening on the pod's address.
  exec tini -s -- "$SPARK_HOME/bin/spark-submit" \
    --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" \
    --deploy-mode client \
    "$@"
  ;;
executor)
  shift
  # Spark passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in that order.
  java_opts=()
  while IFS= read -r name; do
    java_opts+=("${!name}")
  done < <(compgen -e | grep '^SPARK_JAVA_OPT_[0-9]*$' | sort -t_ -k4 -n)
  classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*"
  [ -n "${SPARK_EXTRA_CLASSPATH:-}" ] && classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
  exec tini -s -- "$JAVA_HOME/bin/java" \
    ${java_opts[@]+"${java_opts[@]}"} \
    "-Xms$SPARK_EXECUTOR_MEMORY" "-Xmx$SPARK_EXECUTOR_MEMORY" \
    -cp "$classpath" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "$SPARK_DRIVER_URL" \
    --executor-id "$SPARK_EXECUTOR_ID" \
    --cores "$SPARK_EXECUTOR_CORES" \
    --app-id "$SPARK_APPLICATION_ID" \
    --hostname "$SPARK_EXECUTOR_POD_IP" \
    --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
    --podName "$SPARK_EXECUTOR_POD_NAME"
  ;;
*)
  exec "$@"
  ;;
esac
