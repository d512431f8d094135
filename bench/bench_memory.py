"""Benchmark: full-size image bytes through `winnow run` in the default heap, with and without bounded row groups.

An img2dataset ``--resize_mode no`` parquet (the original JPEG bytes in ``jpg``; two
shard files in row groups of 100 samples, as img2dataset's parquet writer buffers
them) of at least 300 MB, generated once under build/. Each variant is one
``winnow run --input-format img2dataset-parquet --stages image`` in its own
process with Spark's defaults (local mode: one JVM of ``spark.driver.memory`` =
1 GB runs driver and executor):

- ``bounded``: the defaults, ``run.row_group_bytes`` = 32 MiB;
- ``parquet-default``: ``run.row_group_bytes = 0``, Parquet's 128 MiB row groups
  checked every 100 rows (what winnow did before the key existed).

Printed per variant: the exit code, the last line on stderr, wall time, images/s per
core, and the peak resident memory of the JVM and of all Python workers, sampled from
/proc every 0.2 s. Runs alternate; the ratio is bounded / parquet-default where both
succeed.

    .venv/bin/python bench/bench_memory.py [--images 280] [--runs 1]
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

VARIANTS = {"bounded": [], "parquet-default": ["--set", "run.row_group_bytes=0"]}


def photo(i: int, rng: np.random.Generator) -> tuple[bytes, int, int]:
    """A full-size photo-like JPEG (~1.1 MB): smooth colour fields plus grain, so it compresses like a photo."""
    width, height = 1400 + (i % 7) * 40, 1000 + (i % 5) * 30
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((width, height), Image.BILINEAR)).astype(np.int16)
    img = (img + rng.integers(-20, 20, (height, width, 3))).clip(0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(img).save(out, "JPEG", quality=95)
    return out.getvalue(), width, height


def make_input(folder: Path, images: int) -> int:
    rng = np.random.default_rng(0)
    rows, total = [], 0
    for i in range(images):
        data, width, height = photo(i, rng)
        total += len(data)
        rows.append(
            {
                "url": f"http://127.0.0.1:9/{i}.jpg",  # refused before any connect if it were fetched
                "caption": f"a photograph number {i}",
                "key": f"{i:09d}",
                "status": "success",
                "error_message": None,
                "width": width,
                "height": height,
                "original_width": width,
                "original_height": height,
                "exif": "{}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "jpg": data,
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2
    for n, part in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(part), folder / f"{n:05d}.parquet", row_group_size=100)
        (folder / f"{n:05d}_stats.json").write_text(json.dumps({"count": len(part)}))
    return total


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the JVM, the Python workers it forks), from /proc's parent links."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        out += children
        todo += children
    return out


def rss_mb(pid: int) -> tuple[str, float]:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return name, int(line.split()[1]) / 1024
    except OSError:
        pass
    return "", 0.0


def run_once(folder: Path, output: Path, extra: list[str]) -> dict[str, Any]:
    winnow = [sys.executable, "-m", "jobs.cli", "run", "--input", str(folder), "--output", str(output)]
    argv = winnow + ["--input-format", "img2dataset-parquet", "--stages", "image", *extra]
    peak = {"java": 0.0, "python_workers": 0.0}
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=benchlib.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            java = workers = 0.0
            for pid in descendants(proc.pid):
                name, mb = rss_mb(pid)
                if name == "java":
                    java += mb
                elif name.startswith("python"):
                    workers += mb
            peak["java"], peak["python_workers"] = max(peak["java"], java), max(peak["python_workers"], workers)
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    done.set()
    watcher.join()
    lines = [line for line in err.splitlines() if line.startswith("winnow:")]
    return {
        "exit": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "stderr_lines": len(err.splitlines()),
        "winnow_line": lines[-1] if lines else None,
        "peak_rss_mb": {k: round(v) for k, v in peak.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = benchlib.BenchArgs(
        __doc__, "bench_memory", rows=280, quick_rows=60, min_rows=4, rows_help="images", quick_runs=1
    )
    args = parser.parse(argv)
    folder = benchlib.BUILD / f"memory-input-{args.rows}"
    marker = folder / benchlib.MARKER
    want = {"images": args.rows, "version": 3}
    if benchlib.cached_marker(marker, want) is None:
        total = make_input(folder, args.rows)
        marker.write_text(json.dumps({**want, "bytes": total}))
    total = json.loads(marker.read_text())["bytes"]
    load_start = benchlib.load_average()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for run in range(args.runs):
        for name in benchlib.alternate(run, list(VARIANTS)):
            output = benchlib.BUILD / f"memory-output-{name}"
            subprocess.run(["rm", "-rf", str(output)], check=True)
            got = run_once(folder, output, VARIANTS[name])
            got["images_per_s_per_core"] = round(benchlib.per_core(args.rows, got["seconds"]), 2)
            results[name].append(got)
    report = {"images": args.rows, "input_mb": round(total / 1e6, 1), "variants": results}
    medians = {n: statistics.median(r["seconds"] for r in results[n]) for n in VARIANTS}
    ok = [medians[n] for n in VARIANTS if all(r["exit"] == 0 for r in results[n])]
    if len(ok) == 2:
        report["ratio_bounded_vs_parquet_default"] = benchlib.ratio(ok[1], ok[0])
    benchlib.publish(report, load_start, args.output, lambda r: json.dumps(r, indent=2))
    return 0 if all(r["exit"] == 0 for r in results["bounded"]) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(benchlib.REPO))
    sys.exit(benchlib.run_main(main, "bench_memory"))
