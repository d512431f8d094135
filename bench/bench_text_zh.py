"""Benchmark: the Chinese text stage (text.language = zh) on Spark against its own rules in one process.

The English benchmark (bench_text.py) has 10,000 real web captions; there is no
Chinese set beside the checkout and nothing can be downloaded, so this one
generates 10,000 Chinese captions (seeded) from a small vocabulary in shapes
web alt-texts take: scene descriptions ("可爱的小狗躺在绿色的草地上"),
product titles ("新款手机壳 透明防摔 包邮"), place names ("杭州的夜景"), about
15 % turned into traditional script with OpenCC, and the kinds the rules
reject: too short, English, Japanese, adjective-only, one long word. Two pair
tables of ``--rows`` rows (default 100,000), as in the English benchmark:

- ``repeat10x``: the 10k captions repeated 10 times (the stage judges each
  distinct caption once);
- ``distinct``: every caption made unique by a Chinese prefix ("第123张："),
  so every row is segmented, language-checked and tagged.

For each variant and each of ``--runs`` runs, alternating, it times:

- Spark: ``with_text_verdicts(pairs, chinese_rules)`` to the ``noop`` sink on
  ONE ``local[2]`` session with the job's settings, workers warmed first;
- ``rules``: ``judge_captions_zh`` (length, jieba words, NSFW, CLD3,
  frequency, posseg) over every row in this process, one core: the stage's own
  row function, what a single-process script would run;
- ``posseg``: OpenCC t2s + bare ``jieba.posseg`` over every row in this
  process: the cost of the noun rule alone (the floor, as bare spaCy is for
  English).

and prints medians, captions/s per core, the ratios, the funnel, JVM start-up
apart, and writes JSON to ``bench/results/text_zh.json``.

    .venv/bin/python bench/bench_text_zh.py [--runs 3] [--rows 100000] [--quick]
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import sys
import time
from functools import partial
from typing import Any

import pandas as pd
from bench_text import funnel, time_spark
from benchlib import (
    MASTER,
    BenchArgs,
    interleave,
    load_average,
    per_core,
    publish,
    ratio,
    rounded,
    run_main,
    start_spark,
    timings,
    warm_workers,
)

SHUFFLE_PARTITIONS = 4
SOURCE_ROWS = 10_000
QUICK_ROWS = 20_000

log = logging.getLogger("winnow.bench.text_zh")

ADJECTIVES = "可爱的 美丽的 红色的 蓝色的 绿色的 古老的 现代的 小小的 巨大的 安静的 热闹的 白色的 金色的 透明的".split()
NOUNS = (
    "小狗 小猫 沙发 草地 城市 夜景 风景 汽车 自行车 鲜花 高山 湖泊 海滩 桌子 咖啡 蛋糕 房子 孩子 女孩 老人 "
    "桥梁 公园 街道 天空 云朵 树林 河流 教堂 书架 窗户 灯笼 寺庙 火车 帆船 雪山 花园 厨房 卧室 市场"
).split()
VERBS = "坐在 躺在 站在 走在 放在 停在 挂在".split()
PLACES = "上 旁边 里 下面 前面".split()
CITIES = "北京 上海 杭州 成都 西安 广州 苏州 重庆 台北 香港".split()
PRODUCTS = "手机壳 连衣裙 运动鞋 双肩包 保温杯 台灯 耳机 茶具 围巾 手表".split()
SELLING = "包邮 正品 新款 热卖 特价 现货 透明防摔 简约大方".split()
ENGLISH = ["a dog on the beach", "red dress for women", "city skyline at night", "fresh flowers in a vase"]
JAPANESE = ["東京タワーの夜景がきれい", "かわいい猫の写真です", "富士山と桜の風景"]
ADVERBS = "非常 真的 特别 十分 超级 相当".split()
FEELINGS = "漂亮 可爱 舒服 温暖 好看 安静 干净 精致".split()


def generate_captions(n: int, seed: int = 7) -> list[str]:
    """``n`` Chinese web-style captions, deterministic for a seed."""
    import opencc

    to_traditional = opencc.OpenCC("s2t").convert
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.45:
            text = (
                f"{rng.choice(ADJECTIVES)}{rng.choice(NOUNS)}{rng.choice(VERBS)}"
                f"{rng.choice(ADJECTIVES)}{rng.choice(NOUNS)}{rng.choice(PLACES)}"
            )
        elif kind < 0.65:
            picks = rng.sample(SELLING, 2)
            text = f"{picks[0]}{rng.choice(ADJECTIVES)}{rng.choice(PRODUCTS)} {picks[1]} {rng.randrange(2, 99)}款可选"
        elif kind < 0.80:
            first, second, third = rng.sample(NOUNS, 3)
            text = f"{rng.choice(CITIES)}的{first}和{second}，{rng.choice(ADJECTIVES)}{third}"
        elif kind < 0.86:
            text = rng.choice(NOUNS)  # too short
        elif kind < 0.90:
            text = rng.choice(ENGLISH)
        elif kind < 0.93:
            text = rng.choice(JAPANESE)
        elif kind < 0.96:
            text = f"{rng.choice(ADVERBS)}{rng.choice(FEELINGS)}而且{rng.choice(ADVERBS)}{rng.choice(FEELINGS)}"
        else:
            text = f"{rng.choice(CITIES)}{rng.choice(NOUNS)}{rng.choice(NOUNS)}照片"
        if rng.random() < 0.15:
            text = to_traditional(text)
        out.append(text)
    return out


def build_pairs(captions: list[str], repeats: int, distinct: bool) -> pd.DataFrame:
    """``captions`` repeated ``repeats`` times as the canonical pair table; ``distinct``: each made unique by a
    Chinese prefix with its row number, so every row is judged."""
    n = len(captions)
    ids = pd.RangeIndex(n * repeats)
    series = pd.Series(captions * repeats)
    if distinct:
        series = "第" + pd.Series(ids + 1).astype(str) + "张：" + series
    return pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="int64"),
            "url": "http://bench.example/" + pd.Series(ids).astype(str) + ".jpg",
            "caption": series,
            "dump": "bench",
        }
    )


def load_chinese_tools(convert: bool) -> None:
    """CLD3, jieba (dictionary) and OpenCC in this (worker) process."""
    from udfs import resources

    resources.chinese_tools(convert)
    resources.language_identifier()


def time_rules(captions: list[str], rules: Any) -> float:
    """Seconds for the Chinese rules over every caption in this process (occurrences 1: none too frequent)."""
    from udfs import resources
    from udfs.text_rules_zh import judge_captions_zh

    tools = resources.chinese_tools(rules.zh.convert_traditional)
    started = time.perf_counter()
    n = sum(1 for _ in judge_captions_zh(captions, [1] * len(captions), rules, resources.cld3_languages, tools))
    seconds = time.perf_counter() - started
    if n != len(captions):
        raise RuntimeError(f"rules returned {n} verdicts for {len(captions)} captions")
    return seconds


def time_posseg(captions: list[str]) -> float:
    """Seconds for OpenCC t2s + bare jieba.posseg over every caption in this process.

    On the simplified text, as the stage tags it: posseg on raw traditional text
    finds few dictionary words and runs its HMM over the rest, about 4x slower.
    """
    from udfs import resources

    tools = resources.chinese_tools(True)
    started = time.perf_counter()
    for caption in captions:
        for _ in tools.tagger.cut(tools.simplified(caption)):
            pass
    return time.perf_counter() - started


def _seconds(values: list[float]) -> str:
    """Runs as the report lists them, to a tenth of a second."""
    return ", ".join(f"{s:.1f}" for s in values)


def format_report(report: dict[str, Any]) -> str:
    """The results table and each variant's runs and funnel; the load averages follow (benchlib.publish)."""
    cores = report["cores"]
    lines = [
        f"JVM start-up (SparkSession getOrCreate): {report['jvm_startup_s']:.1f} s; "
        f"jieba + OpenCC load in the driver {report['tools_load_s']:.1f} s",
        f"master {report['master']} ({cores} cores), {report['runs']} run(s) per side, medians; "
        f"Spark per core = rows / s / {cores}; rules and posseg = one process, one core, every row",
        "",
        f"{'variant':<10} {'rows':>8} {'spark s':>8} {'spark/s/core':>13} {'rules/s':>9} {'ratio':>6} "
        f"{'posseg/s':>9} {'ratio':>6}",
    ]
    for name, v in report["variants"].items():
        lines.append(
            f"{name:<10} {v['rows']:>8,} {v['spark_s_median']:>8.1f} {v['spark_captions_per_s_per_core']:>13,.0f} "
            f"{v['rules_captions_per_s']:>9,.0f} {v['ratio_spark_to_rules_per_core']:>6.2f} "
            f"{v['posseg_captions_per_s']:>9,.0f} {v['ratio_spark_to_posseg_per_core']:>6.2f}"
        )
    lines.append("ratio = Spark captions/s/core / one-process captions/s (above 1: Spark per core is faster)")
    for name, v in report["variants"].items():
        lines += [
            "",
            f"{name}: runs (s): spark {_seconds(v['spark_s'])}; rules {_seconds(v['rules_s'])}; "
            f"posseg {_seconds(v['posseg_s'])}; worker warm-ups {_seconds(v['worker_warmup_s'])}",
            f"{name} funnel (warm-up run, untimed):",
        ]
        for reason, c in v["funnel"].items():
            lines.append(f"  {reason:<24} {c['rows']:>9,} rows {c['distinct_captions']:>9,} distinct captions")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = BenchArgs(
        __doc__,
        "text_zh",
        rows=100_000,
        quick_rows=QUICK_ROWS,
        rows_help="rows per variant",
        quick_runs=1,
        quick_help=f"{QUICK_ROWS:,} rows, 1 run",
    )
    args = parser.parse(argv)
    runs, target_rows = args.runs, args.rows

    from pyspark import StorageLevel

    from jobs.config import RunConfig
    from jobs.stages.text import rules_from_config, with_text_verdicts
    from schemas.tables import PAIR
    from udfs.text_rules import TextConfig
    from udfs.text_rules_zh import ChineseTextConfig

    load_start = load_average()
    started = time.perf_counter()
    rules = rules_from_config(TextConfig(language="zh"), ChineseTextConfig())
    tools_load_s = time.perf_counter() - started
    source = generate_captions(SOURCE_ROWS)
    repeats = math.ceil(target_rows / len(source))
    variants = {
        f"repeat{repeats}x": build_pairs(source, repeats, distinct=False),
        "distinct": build_pairs(source, repeats, distinct=True),
    }
    spark, jvm_startup_s = start_spark(MASTER, "winnow-bench-text-zh", SHUFFLE_PARTITIONS, RunConfig().arrow_batch_size)
    cores = spark.sparkContext.defaultParallelism
    load = partial(load_chinese_tools, rules.zh.convert_traditional)

    frames: dict[str, Any] = {}
    captions: dict[str, list[str]] = {}
    try:
        for name, pdf in variants.items():
            frames[name] = spark.createDataFrame(pdf, schema=PAIR).persist(StorageLevel.MEMORY_ONLY)
            frames[name].count()
            captions[name] = pdf["caption"].tolist()
        results: dict[str, dict[str, Any]] = {}
        for name, frame in frames.items():
            log.info("%s: warm-up run (untimed), funnel", name)
            f = funnel(with_text_verdicts(frame, rules), len(captions[name]))
            results[name] = {"funnel": f, "worker_warmup_s": []}

        def spark_side(run: int, name: str) -> float:
            results[name]["worker_warmup_s"].append(warm_workers(spark, cores, load))
            seconds, _ = time_spark(spark, frames[name], rules, f"bench-zh-{name}-{run}")
            log.info("run %d/%d %s: Spark %.1f s", run, runs, name, seconds)
            return seconds

        def rules_side(run: int, name: str) -> float:
            seconds = time_rules(captions[name], rules)
            log.info("run %d/%d %s: rules %.1f s", run, runs, name, seconds)
            return seconds

        def posseg_side(run: int, name: str) -> float:
            seconds = time_posseg(captions[name])
            log.info("run %d/%d %s: posseg %.1f s", run, runs, name, seconds)
            return seconds

        # Per round and variant: Spark (workers warmed first), the rules, then bare posseg.
        sides = {}
        for name in frames:
            sides[name, "spark"] = partial(spark_side, name=name)
            sides[name, "rules"] = partial(rules_side, name=name)
            sides[name, "posseg"] = partial(posseg_side, name=name)
        seconds = interleave(runs, sides)

        variants_report = {}
        for name, r in results.items():
            rows = len(captions[name])
            spark_rate = per_core(rows, statistics.median(seconds[name, "spark"]), cores)
            rules_rate = rows / statistics.median(seconds[name, "rules"])
            posseg_rate = rows / statistics.median(seconds[name, "posseg"])
            variants_report[name] = {
                "rows": rows,
                "distinct_captions": sum(c["distinct_captions"] for c in r["funnel"].values()),
                **timings(seconds[name, "spark"], "spark_s"),
                "spark_captions_per_s_per_core": round(spark_rate, 1),
                "rules_s": rounded(seconds[name, "rules"]),
                "rules_captions_per_s": round(rules_rate, 1),
                "posseg_s": rounded(seconds[name, "posseg"]),
                "posseg_captions_per_s": round(posseg_rate, 1),
                "ratio_spark_to_rules_per_core": ratio(spark_rate, rules_rate),
                "ratio_spark_to_posseg_per_core": ratio(spark_rate, posseg_rate),
                "worker_warmup_s": rounded(r["worker_warmup_s"]),
                "funnel": r["funnel"],
            }
    finally:
        for frame in frames.values():
            frame.unpersist()
        spark.stop()

    report = {
        "bench": "text_zh",
        "source": f"{SOURCE_ROWS:,} generated Chinese captions (bench_text_zh.generate_captions, seed 7)",
        "master": MASTER,
        "cores": cores,
        "shuffle_partitions": SHUFFLE_PARTITIONS,
        "runs": runs,
        "jvm_startup_s": round(jvm_startup_s, 3),
        "tools_load_s": round(tools_load_s, 3),
        "variants": variants_report,
    }
    publish(report, load_start, args.output, format_report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "bench_text_zh"))
