"""Benchmark: the language rule with CLD3 against fastText's lid.176, on captions labelled by reading.

Reads ``bench/data/lid_labels.jsonl`` (640 real web captions from the
project's LAION-style test file, each labelled en / not-en / ambiguous by a
person; bench/data/README.md says how they were sampled and labelled). It is
committed, so this benchmark needs nothing beside the checkout.

Quality: for every variant (identifier, rule, ``text.min_language_probability``)
the text stage's own language rule (``udfs.text_rules.check_language_and_frequency``
with ``udfs.resources.language_ranker``) judges every labelled caption, and the
report gives

- the share of ``en`` captions kept, on the random sample (the mix the stage
  meets) and on all of them;
- the share of ``not-en`` captions refused (both samples: the random one holds
  only 6);
- the share of ``ambiguous`` captions kept (names, codes, mixed languages: no
  right answer, shown for information).

Speed: each identifier ranks the labelled captions, repeated to ``--rows``
(default 64,000), in this process on one core, interleaved, medians of
``--runs`` (default 3) rounds; captions/s on one core, and the ratio to CLD3
(COYO's identifier, the baseline) in the same run. Models are loaded before the
timed rounds (a job loads them once per Python worker).

    .venv/bin/python bench/bench_language_id.py [--runs 3] [--rows 64000] [--quick]
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import REPO, BenchArgs, interleave, load_average, publish, ratio, rotate, run_main, timings

LABELS = REPO / "bench" / "data" / "lid_labels.jsonl"
LABEL_VALUES = ("en", "not-en", "ambiguous")
SAMPLES = ("random", "non-ascii")
QUICK_ROWS = 6_400

# (name, text.language_id, text.language_top_k, text.min_language_probability): the rules the table
# compares. CLD3 top-1 at 0 is COYO's rule (the default); the thresholds are the values a user would try.
VARIANTS = (
    ("cld3", "cld3", 1, 0.0),
    ("cld3 p>=0.5", "cld3", 1, 0.5),
    ("cld3 p>=0.9", "cld3", 1, 0.9),
    ("fasttext", "fasttext", 1, 0.0),
    ("fasttext p>=0.3", "fasttext", 1, 0.3),
    ("fasttext p>=0.5", "fasttext", 1, 0.5),
    ("fasttext top3 p>=0.1", "fasttext", 3, 0.1),
    ("fasttext top3 p>=0.2", "fasttext", 3, 0.2),
)
# The identifiers timed: (name, text.language_id, k). CLD3 is the baseline.
SPEED = (("cld3", "cld3", 1), ("fasttext", "fasttext", 1), ("fasttext top3", "fasttext", 3))

log = logging.getLogger("winnow.bench.language_id")


def read_labels(path: Path = LABELS) -> list[dict[str, Any]]:
    """The labelled captions, checked: every label and sample one of the known values."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for r in rows:
        if r["label"] not in LABEL_VALUES or r["sample"] not in SAMPLES:
            raise ValueError(f"{path}: bad label or sample in {r}")
    return rows


def judge(rows: list[dict[str, Any]], language_id: str, top_k: int, min_p: float) -> list[bool]:
    """Whether the text stage's language rule keeps each caption as English under these settings."""
    from udfs import resources
    from udfs.text_rules import TextConfig, Verdict, check_language_and_frequency

    cfg = TextConfig(language_id=language_id, language_top_k=top_k, min_language_probability=min_p)
    if problems := list(cfg.problems()):
        raise ValueError(f"variant {language_id}/{top_k}/{min_p}: {problems}")
    identify = resources.language_ranker(language_id, top_k)
    kept = []
    for r in rows:
        v = Verdict(text_length=len(r["caption"]), word_count=0)
        check_language_and_frequency(v, r["caption"], 1, cfg, identify)
        kept.append(v.reason is None)
    return kept


def shares(rows: list[dict[str, Any]], kept: list[bool]) -> dict[str, Any]:
    """Counts and shares of en kept (random sample, all), not-en refused, ambiguous kept."""

    def count(label: str, sample: str | None = None) -> tuple[int, int]:
        picked = [k for r, k in zip(rows, kept, strict=True) if r["label"] == label and sample in (None, r["sample"])]
        return sum(picked), len(picked)

    en_random, n_en_random = count("en", "random")
    en_all, n_en = count("en")
    not_en_kept, n_not_en = count("not-en")
    amb_kept, n_amb = count("ambiguous")
    return {
        "en_kept_random": en_random,
        "en_random": n_en_random,
        "en_kept_random_share": round(en_random / n_en_random, 3),
        "en_kept": en_all,
        "en": n_en,
        "en_kept_share": round(en_all / n_en, 3),
        "not_en_refused": n_not_en - not_en_kept,
        "not_en": n_not_en,
        "not_en_refused_share": round((n_not_en - not_en_kept) / n_not_en, 3),
        "ambiguous_kept": amb_kept,
        "ambiguous": n_amb,
        "ambiguous_kept_share": round(amb_kept / n_amb, 3),
    }


def time_ranker(captions: list[str], language_id: str, k: int) -> float:
    """Seconds for one identifier to rank every caption in this process."""
    from udfs import resources

    identify = resources.language_ranker(language_id, k)
    started = time.perf_counter()
    named = sum(1 for c in captions if identify(c))
    seconds = time.perf_counter() - started
    if named != len(captions):
        raise RuntimeError(f"{language_id} named no language for {len(captions) - named} captions")
    return seconds


def format_report(report: dict[str, Any]) -> str:
    """The quality table, then the speed table; the load averages follow (benchlib.publish)."""
    c = report["label_counts"]
    lines = [
        f"labelled captions: {report['captions']} ({', '.join(f'{k} {v}' for k, v in c.items())})",
        "",
        f"{'variant':<22} {'en kept (random)':>17} {'en kept (all)':>14} {'not-en refused':>15} {'ambiguous kept':>15}",
    ]
    for name, q in report["quality"].items():
        lines.append(
            f"{name:<22} {q['en_kept_random']:>4}/{q['en_random']:<4} {q['en_kept_random_share']:>6.1%} "
            f"{q['en_kept_share']:>14.1%} {q['not_en_refused']:>3}/{q['not_en']:<3} {q['not_en_refused_share']:>6.1%} "
            f"{q['ambiguous_kept']:>3}/{q['ambiguous']:<3} {q['ambiguous_kept_share']:>6.1%}"
        )
    lines += [
        "",
        f"speed: {report['rows']:,} captions per round (the labelled ones repeated), one process = one core, "
        f"{report['runs']} round(s), medians",
        f"{'identifier':<16} {'seconds':>8} {'captions/s/core':>16} {'vs cld3':>8}   runs",
    ]
    for name, s in report["speed"].items():
        runs = ", ".join(f"{x:.3f}" for x in s["seconds"])
        lines.append(
            f"{name:<16} {s['seconds_median']:>8.3f} {s['captions_per_s_per_core']:>16,.0f} "
            f"{s['ratio_to_cld3']:>8.2f}   {runs}"
        )
    lines.append("vs cld3 = captions/s / CLD3's captions/s in the same run (above 1: faster than CLD3)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        "language_id",
        rows=64_000,
        quick_rows=QUICK_ROWS,
        rows_help="captions per timed round (the labelled ones repeated)",
        quick_runs=1,
        quick_help=f"{QUICK_ROWS:,} captions, 1 round",
    )
    args = parser.parse(argv)
    from udfs import resources

    rows = read_labels()
    load_start = load_average()
    started = time.perf_counter()
    resources.language_identifier()
    cld3_load_s = time.perf_counter() - started
    started = time.perf_counter()
    resources.fasttext_model()
    fasttext_load_s = time.perf_counter() - started

    quality = {name: shares(rows, judge(rows, lid, k, p)) for name, lid, k, p in VARIANTS}
    repeats = -(-args.rows // len(rows))
    captions = [r["caption"] for r in rows] * repeats
    sides = {name: (lambda run, lid=lid, k=k: time_ranker(captions, lid, k)) for name, lid, k in SPEED}
    seconds = interleave(args.runs, sides, rotate)
    rates = {name: len(captions) / statistics.median(s) for name, s in seconds.items()}
    speed = {
        name: {
            **timings(s),
            "captions_per_s_per_core": round(rates[name], 1),
            "ratio_to_cld3": ratio(rates[name], rates["cld3"]),
        }
        for name, s in seconds.items()
    }
    report = {
        "bench": "language_id",
        "labels": str(LABELS.relative_to(REPO)),
        "captions": len(rows),
        "label_counts": dict(Counter(f"{r['sample']} {r['label']}" for r in rows)),
        "variants": {
            name: {"language_id": lid, "language_top_k": k, "min_language_probability": p}
            for name, lid, k, p in VARIANTS
        },
        "quality": quality,
        "rows": len(captions),
        "runs": args.runs,
        "cld3_load_s": round(cld3_load_s, 3),
        "fasttext_load_s": round(fasttext_load_s, 3),
        "fasttext_model": str(resources.fasttext_model_path().name),
        "speed": speed,
    }
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_language_id"))
