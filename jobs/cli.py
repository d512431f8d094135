"""The `winnow` command: `winnow run` (the pipeline), `winnow demo` (the built-in sample),
`winnow export-wds` (accepted pairs as WebDataset shards), `winnow export-list`
(accepted pairs as one folder of parquet, `dump` a column), `winnow blocklist`
(an evaluation set's pHashes, for the dedup stage), `winnow detect` (a detector
plug-in over accepted pairs' images: the grounding stage's Boxes table) and
`winnow config` (every config key with its default; the rules table).

`winnow run` takes the same options as `spark-submit jobs/pipeline.py`; use
spark-submit on a cluster, `winnow run` on a laptop or in CI (local mode).
"""

from __future__ import annotations

import argparse
import sys

from jobs import __version__, blocklist, demo, detect, export, export_list, pipeline, reference

# command -> (module with add_<x>_arguments and execute, one-line help, the options' adder)
COMMANDS = {
    "run": (pipeline, "run the pipeline over an input", pipeline.add_run_arguments),
    "demo": (demo, "generate the built-in sample and run the pipeline on it in local mode", demo.add_demo_arguments),
    "export-wds": (
        export,
        "write accepted pairs (run with image.keep_bytes=true) as WebDataset tar shards",
        export.add_export_arguments,
    ),
    "export-list": (
        export_list,
        "write accepted pairs as one folder of parquet with `dump` as a column (for img2dataset, HF datasets)",
        export_list.add_export_list_arguments,
    ),
    "blocklist": (
        blocklist,
        "build an evaluation-set pHash blocklist from image files or parquet",
        blocklist.add_blocklist_arguments,
    ),
    "detect": (
        detect,
        "run a detector plug-in over accepted pairs (with image bytes); write the Boxes table",
        detect.add_detect_arguments,
    ),
    "config": (
        reference,
        "print every config key with its default (TOML), the config reference or the rules table",
        reference.add_config_arguments,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="winnow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"winnow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text, add_arguments) in COMMANDS.items():
        add_arguments(commands.add_parser(name, help=help_text, description=module.DESCRIPTION))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command][0].execute(args)


if __name__ == "__main__":
    sys.exit(main())
