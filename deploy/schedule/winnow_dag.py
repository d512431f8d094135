"""Airflow DAG: winnow once a day over the crawl dumps that arrived since the last run.

Copy this file into the DAGs folder of an Airflow whose workers can run deploy/submit.sh: a
checkout of winnow at WINNOW_HOME (with build/winnow-env.tar.gz from deploy/pack-env.sh),
spark-submit on PATH and the cluster's client configuration (HADOOP_CONF_DIR for YARN).

`--incremental` processes only the dumps without committed output and deduplicates them against
everything accepted before, so a retry resumes where a failed attempt stopped, and catch-up runs
for missed days are pointless (catchup=False): one run takes every new dump. max_active_runs=1
keeps two runs from writing the same output at once.

Airflow is not a winnow dependency; tests/test_deploy.py reads this file without importing it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

WINNOW_HOME = "/opt/winnow"

BASH_COMMAND = (
    'cd "$WINNOW_HOME" && deploy/submit.sh --master yarn --deploy-mode cluster'
    " -- --input hdfs:///crawl --output hdfs:///winnow --incremental"
)

with DAG(
    dag_id="winnow",
    description="COYO filtering, dedup and grounding of the new crawl dumps",
    schedule="@daily",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=30),
        # a hung run must not hold the single run slot into the next day
        "execution_timeout": timedelta(hours=20),
    },
    tags=["winnow"],
) as dag:
    BashOperator(
        task_id="submit",
        bash_command=BASH_COMMAND,
        env={"WINNOW_HOME": WINNOW_HOME, "WINNOW_ENV_ARCHIVE": f"{WINNOW_HOME}/build/winnow-env.tar.gz"},
        append_env=True,
    )
