"""The `winnow` command: `winnow run` (the pipeline), `winnow demo` (the built-in sample),
`winnow export-wds` (accepted pairs as WebDataset shards), `winnow blocklist`
(an evaluation set's pHashes, for the dedup stage) and `winnow detect` (a detector
plug-in over accepted pairs' images: the grounding stage's Boxes table).

`winnow run` takes the same options as `spark-submit jobs/pipeline.py`; use
spark-submit on a cluster, `winnow run` on a laptop or in CI (local mode).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from jobs import __version__, blocklist, detect, export, pipeline
from jobs.sample import serve_images, write_sample

DEMO_DETECTOR = "udfs.detectors:shape_detector"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"winnow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    pipeline.add_run_arguments(
        commands.add_parser("run", help="run the pipeline over an input", description=pipeline.DESCRIPTION)
    )
    demo = commands.add_parser(
        "demo",
        help="generate the built-in sample and run the pipeline on it in local mode",
        description="Generate the built-in sample (two dumps of synthetic scenes plus rows "
        "each rule rejects) under OUTPUT/sample-input, serve its images from 127.0.0.1 and "
        "run the pipeline on it.",
    )
    demo.add_argument("--output", default="demo-output", help="output folder (default demo-output)")
    demo.add_argument("--rows", type=int, default=2000, help="sample size (default 2000, at least 100)")
    demo.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    export.add_export_arguments(
        commands.add_parser(
            "export-wds",
            help="write accepted pairs (run with image.keep_bytes=true) as WebDataset tar shards",
            description=export.DESCRIPTION,
        )
    )
    blocklist.add_blocklist_arguments(
        commands.add_parser(
            "blocklist",
            help="build an evaluation-set pHash blocklist from image files or parquet",
            description=blocklist.DESCRIPTION,
        )
    )
    detect.add_detect_arguments(
        commands.add_parser(
            "detect",
            help="run a detector plug-in over accepted pairs (with image bytes); write the Boxes table",
            description=detect.DESCRIPTION,
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return pipeline.execute(args)
    if args.command == "export-wds":
        return export.execute(args)
    if args.command == "blocklist":
        return blocklist.execute(args)
    if args.command == "detect":
        return detect.execute(args)
    if args.rows < 100:
        print("winnow: error: --rows must be at least 100", file=sys.stderr)
        return 2
    return run_demo(args)


def run_demo(args: argparse.Namespace) -> int:
    """Generate the sample and its images, serve the images on 127.0.0.1, run the pipeline."""
    output = Path(args.output)
    sample, images, blocklist_dir = output / "sample-input", output / "sample-images", output / "sample-blocklist"
    for folder in (sample, images, blocklist_dir):
        shutil.rmtree(folder, ignore_errors=True)
    with serve_images(images) as base_url:
        write_sample(sample, n=args.rows, images=images, base_url=base_url, blocklist=blocklist_dir)
        print(f"sample:   {sample}/ ({args.rows} rows in two dumps, images served from {base_url}/sample/)")
        # The demo allows its own loopback server and nothing else: 127.0.0.2 stays refused.
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
                # text -> image (keeping the resized image) -> dedup -> detect + ground, with the
                # colour-and-shape detector for the sample's scenes
                "--stages",
                "text,image,dedup,ground",
                "--set",
                "image.keep_bytes=true",
                "--set",
                f"ground.detector={DEMO_DETECTOR}",
            ]
        )
        return pipeline.execute(run_args)


if __name__ == "__main__":
    sys.exit(main())
