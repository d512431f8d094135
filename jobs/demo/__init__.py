"""`winnow demo`: the built-in sample, served from 127.0.0.1, through the whole pipeline in local mode.

Demo code only: the sample generator (``jobs.demo.sample``) and the
colour-and-shape detector for its scenes (``jobs.demo.shapes``). No
production module imports this package; the demo names its detector by path
(``ground.detector``), as any plug-in is named.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from jobs import pipeline
from jobs.demo.sample import serve_images, write_sample

DESCRIPTION = (
    "Generate the built-in sample (two dumps of synthetic scenes plus rows each rule rejects) under "
    "OUTPUT/sample-input, serve its images from 127.0.0.1 and run the pipeline on it."
)
DETECTOR = "jobs.demo.shapes:shape_detector"


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `winnow demo`."""
    parser.add_argument("--output", default="demo-output", help="output folder (default demo-output)")
    parser.add_argument("--rows", type=int, default=2000, help="sample size (default 2000, at least 100)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    return parser


def execute(args: argparse.Namespace) -> int:
    """Generate the sample and its images, serve the images on 127.0.0.1, run the pipeline."""
    if args.rows < 100:
        print("winnow: error: --rows must be at least 100", file=sys.stderr)
        return 2
    output = Path(args.output)
    sample, images, blocklist_dir = output / "sample-input", output / "sample-images", output / "sample-blocklist"
    for folder in (sample, images, blocklist_dir):
        shutil.rmtree(folder, ignore_errors=True)
    with serve_images(images) as base_url:
        write_sample(sample, n=args.rows, images=images, base_url=base_url, blocklist=blocklist_dir)
        print(f"sample:   {sample}/ ({args.rows} rows in two dumps, images served from {base_url}/sample/)")
        # The demo allows its own loopback server and nothing else: 127.0.0.2 stays refused.
        # text -> image (keeping the resized image) -> dedup -> detect + ground, with the
        # colour-and-shape detector for the sample's scenes.
        run_args = pipeline.add_run_arguments(argparse.ArgumentParser()).parse_args(
            [
                "--input",
                str(sample),
                "--output",
                str(output),
                "--master",
                args.master,
                "--allow-network",
                "127.0.0.1/32",
                "--set",
                f"dedup.blocklists={json.dumps([str(blocklist_dir)])}",
                "--stages",
                "text,image,dedup,ground",
                "--set",
                "image.keep_bytes=true",
                "--set",
                f"ground.detector={DETECTOR}",
            ]
        )
        return pipeline.execute(run_args)
