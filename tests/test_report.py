"""The report: report.html (jobs.report, no Spark) and its statistics (jobs.statistics, Spark).

The page is checked without a browser: html.parser reads the ``data-*``
attributes every bar carries, and they must equal funnel.json; the histogram
counts are recomputed here with numpy over the written parquet, bin by bin.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import cli, pipeline, statistics
from jobs.report import bin_labels, render_report, visible
from schemas import reasons

HOSTILE = "</svg><script>alert(1)</script>"


class Page(HTMLParser):
    """What the tests read back: every element's tag and attributes, each bar's numbers, the text
    drawn in each chart (tooltips left out) and all text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.svgs: list[dict[str, str]] = []
        self.bars: dict[str, dict[str, int]] = {}
        self.text: list[str] = []
        self.svg_text: dict[str, list[str]] = {}
        self._chart: str | None = None
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attrs))
        self._in_title = tag == "title"
        if tag == "svg":
            self.svgs.append(attrs)
            self._chart = attrs.get("data-chart")
            self.svg_text[self._chart] = []
        if "data-count" in attrs:
            chart = self.bars.setdefault(attrs["data-chart"], {})
            assert attrs["data-key"] not in chart, f"two bars {attrs['data-key']} in {attrs['data-chart']}"
            chart[attrs["data-key"]] = int(attrs["data-count"])

    def handle_endtag(self, tag):
        self._in_title = False
        if tag == "svg":
            self._chart = None

    def handle_data(self, data):
        self.text.append(data)
        if self._chart is not None and not self._in_title:  # the chart's drawn text, not its tooltips
            self.svg_text[self._chart].append(data)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    return parser


def read_report(out: Path) -> tuple[dict, str, Page]:
    funnel = json.loads((out / "report" / "funnel.json").read_text())
    page = (out / "report" / "report.html").read_text(encoding="utf-8")
    return funnel, page, parse(page)


def expected_bars(funnel: dict) -> dict[str, dict[str, int]]:
    """The bars the page must show, from funnel.json."""
    bars = {"funnel": {}}
    for s in funnel["stages"]:
        name = s["stage"]
        bars["funnel"].update({f"{name}:rows_in": s["rows_in"], f"{name}:accepted": s["accepted"]})
        bars["funnel"][f"{name}:rejected"] = s["rejected"]
        bars["funnel"].update({f"{name}:reason:{r}": n for r, n in s["reasons"].items()})
    if "boxes" in funnel:
        b = funnel["boxes"]
        bars["boxes"] = {"boxes_in": b["boxes_in"], **{f"outcome:{k}": n for k, n in b["outcomes"].items()}}
        bars["boxes"].update({f"rejected:{k}": n for k, n in b["rejected"].items()})
    stats = funnel["statistics"]
    for h in stats["histograms"]:
        bars[f"hist-{h['name']}"] = {str(i): b["count"] for i, b in enumerate(h["bins"])}
    if "duplicate_groups" in stats:
        bars["duplicate-groups"] = {str(i): b["count"] for i, b in enumerate(stats["duplicate_groups"]["bins"])}
    # an empty chart has no bars at all
    return {chart: keys for chart, keys in bars.items() if any(keys.values())}


def assert_page_matches_funnel(funnel: dict, page: str, parsed: Page) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert parsed.bars == expected_bars(funnel)
    titles = {svg["data-chart"]: svg["aria-label"] for svg in parsed.svgs}
    assert len(titles) == len(parsed.svgs), "one svg per chart"
    assert titles["funnel"] == "Funnel: rows per stage and reason"
    for h in funnel["statistics"]["histograms"]:
        assert titles[f"hist-{h['name']}"] == h["title"]
    assert ("boxes" in titles) == ("boxes" in funnel)
    assert ("duplicate-groups" in titles) == ("duplicate_groups" in funnel["statistics"])
    # offline: nothing to fetch, nothing to run
    assert not [t for t, a in parsed.tags if t in ("script", "link", "img", "iframe", "object", "embed")]
    assert not [a for _, a in parsed.tags if any(k.startswith("on") or k in ("src", "href") for k in a)]
    # URLs of the data are text; the only URL in an attribute is the SVG namespace
    assert {v for _, a in parsed.tags for k, v in a.items() if "://" in v} <= {"http://www.w3.org/2000/svg"}
    assert "url(" not in page and "@import" not in page


def bin_counts(values, hist: dict) -> list[int]:
    """The bins of funnel.json's ``edges`` recomputed with numpy (``[lo, hi)``, last closed or open)."""
    edges = np.array(hist["edges"], dtype=float)
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    idx = np.searchsorted(edges, x, side="right") - 1
    if hist["open_end"]:
        keep = idx >= 0
    else:
        idx[x == edges[-1]] = len(edges) - 2
        keep = (idx >= 0) & (idx <= len(edges) - 2)
    return np.bincount(idx[keep], minlength=len(hist["bins"])).tolist()


def check_histograms(funnel: dict, accepted_dir: Path) -> set[str]:
    """Every histogram of funnel.json equals numpy's over the accepted parquet; returns the names."""
    hists = {h["name"]: h for h in funnel["statistics"]["histograms"]}
    table = pq.read_table(accepted_dir).to_pandas() if funnel["accepted"] else None
    measures = {}
    if table is not None:
        measures["caption_length"] = table["caption"].str.len()
        for col in ("width", "height", "word_count"):
            if col in table:
                measures[col] = table[col]
        if "width" in table and "height" in table:
            w, h = table["width"].astype(float), table["height"].astype(float)
            measures["aspect_ratio"] = np.maximum(w, h) / np.minimum(w, h)
        if "noun_chunks" in table:
            measures["box_score"] = [c[6] for chunks in table["noun_chunks"] if chunks is not None for c in chunks]
    for name, values in measures.items():
        got = [b["count"] for b in hists[name]["bins"]]
        assert got == bin_counts(values, hists[name]), name
        if name != "box_score":  # these columns have no nulls here: the bins hold every accepted row
            assert sum(got) == funnel["accepted"] and hists[name]["nulls"] == hists[name]["outside"] == 0
    return set(hists)


def write_pairs(path: Path, captions: list[str | None]) -> Path:
    rows = [{"url": f"http://x/{i}", "caption": c} for i, c in enumerate(captions)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def job_descriptions(spark, after: int) -> list[str | None]:
    """Descriptions of the jobs with an id above ``after``, from Spark's status store (UI off or on)."""
    jobs = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
    out = []
    for i in range(jobs.size()):
        job = jobs.apply(i)
        if job.jobId() > after:
            out.append(job.description().getOrElse(None) if job.description().isDefined() else None)
    return out


def last_job_id(spark) -> int:
    jobs = spark.sparkContext._jsc.sc().statusStore().jobsList(None)
    return max((jobs.apply(i).jobId() for i in range(jobs.size())), default=-1)


# --- pure: no Spark -------------------------------------------------------------------------


def report_dict(**extra) -> dict:
    """A small funnel.json by hand: two stages, boxes, one histogram, duplicates, samples."""
    hist = statistics._bins(statistics.HISTOGRAMS["width"], {0: 0, 2: 5, 20: 1, -1: 2})
    dup = statistics._bins(statistics.DUPLICATE_GROUP_SIZES, {0: 3, 1: 1})
    dup.update(groups=4, rows=9, max_size=3)
    row = {"id": 7, "dump": "d1", "url": "http://x/7", "url_chars": 10, "caption": "a cat", "caption_chars": 5}
    row.update(detail="fr:1.0", detail_chars=6)
    report = {
        "input": "in.parquet",
        "input_format": "parquet",
        "output": "out",
        "rows_in": 10,
        "accepted": 6,
        "rejected": 4,
        "stages": [
            {"stage": "ingest", "rows_in": 10, "accepted": 9, "rejected": 1, "reasons": {"missing-url": 1}},
            {
                "stage": "text",
                "rows_in": 9,
                "accepted": 6,
                "rejected": 3,
                "reasons": {"text-too-short": 1, "text-wrong-language": 2},
            },
        ],
        "boxes": {"boxes_in": 5, "outcomes": {"kept": 3, "suppressed": 1}, "rejected": {"box-no-pair": 1}},
        "statistics": {
            "histograms": [hist],
            "duplicate_groups": dup,
            "samples": {
                "per_reason": 5,
                "chars": 300,
                "groups": [{"stage": "text", "reason": "text-wrong-language", "count": 2, "rows": [row]}],
            },
        },
    }
    report.update(extra)
    return report


def test_every_chart_is_an_inline_svg_with_its_numbers():
    report = report_dict()
    page = render_report(report)
    parsed = parse(page)
    assert_page_matches_funnel(report, page, parsed)
    assert [s["data-chart"] for s in parsed.svgs] == ["funnel", "boxes", "hist-width", "duplicate-groups"]
    assert parsed.bars["funnel"]["text:reason:text-wrong-language"] == 2
    assert parsed.bars["hist-width"] == {str(i): n for i, n in enumerate([0, 0, 5] + [0] * 17 + [1])}
    # bin labels and the values left out are shown
    assert "≥2000" in parsed.svg_text["hist-width"]
    assert "Not shown: 2 rows without a value." in "".join(parsed.text)
    assert "4 groups, 9 rows (winners included), largest 3." in "".join(parsed.text)
    assert 'http-equiv="Content-Security-Policy" content="default-src \'none\'' in page


def test_hostile_strings_are_escaped_everywhere():
    sample = {"id": 1, "dump": HOSTILE, "url": f'javascript:alert(1)//"{HOSTILE}', "url_chars": 60}
    sample.update(caption=f"{HOSTILE} & \"quoted\" 'single' \x00\x07 \u202eevil", caption_chars=10_000)
    sample.update(detail='<img src=x onerror="alert(1)">', detail_chars=29)
    group = {"stage": "text", "reason": HOSTILE, "count": 1, "rows": [sample]}
    report = report_dict(input=HOSTILE, output='"><script>alert(2)</script>')
    report["statistics"]["samples"]["groups"] = [group]
    report["stages"][1]["reasons"] = {HOSTILE: 1, "text-wrong-language": 2}
    page = render_report(report)
    parsed = parse(page)
    assert "<script" not in page.lower() and "<img" not in page.lower() and "\x00" not in page
    assert not [t for t, _ in parsed.tags if t in ("script", "img")]
    assert [s["data-chart"] for s in parsed.svgs] == ["funnel", "boxes", "hist-width", "duplicate-groups"]
    text = "".join(parsed.text)
    # shown as text, exactly: the caption with its hidden characters made visible, and where it was cut
    assert f"{HOSTILE} & \"quoted\" 'single' \\u0000\\u0007 \\u202eevil … (10,000 characters)" in text
    assert '<img src=x onerror="alert(1)">' in text
    assert parsed.bars["funnel"][f"text:reason:{HOSTILE}"] == 1
    assert visible("a\u2028b\u200bc\td") == "a\\u2028b\\u200bc\\u0009d"


def test_empty_charts_say_no_rows():
    report = report_dict(accepted=0)
    report["stages"] = [{"stage": "ingest", "rows_in": 0, "accepted": 0, "rejected": 0, "reasons": {}}]
    del report["boxes"]
    report["statistics"]["histograms"][0] = statistics._bins(statistics.HISTOGRAMS["width"], {})
    report["statistics"]["duplicate_groups"] = {
        **statistics._bins(statistics.DUPLICATE_GROUP_SIZES, {}),
        "groups": 0,
        "rows": 0,
        "max_size": 0,
    }
    report["statistics"]["samples"]["groups"] = []
    parsed = parse(render_report(report))
    assert [s["data-chart"] for s in parsed.svgs] == ["funnel", "hist-width", "duplicate-groups"]
    assert all(s.get("data-empty") == "true" for s in parsed.svgs)
    assert all("".join(t).strip() == "no rows" for t in parsed.svg_text.values())
    assert parsed.bars == {}
    assert "no rejected rows" in "".join(parsed.text)


def test_bin_labels():
    assert bin_labels([0, 100, 200], open_end=True, integer=True) == ["0–99", "100–199", "≥200"]
    assert bin_labels([2, 3, 11], open_end=True, integer=True) == ["2", "3–10", "≥11"]
    assert bin_labels([0.0, 0.05, 1.0], open_end=False, integer=False) == ["0–0.05", "0.05–1"]
    assert statistics.even_edges(1.0, 0.1, 3) == (1.0, 1.1, 1.2, 1.3)
    closed = statistics._bins(statistics.HISTOGRAMS["box_score"], {19: 4})
    assert len(closed["bins"]) == 20 and closed["bins"][-1] == {"lo": 0.95, "hi": 1.0, "label": "0.95–1", "count": 4}
    assert statistics._bins(statistics.HISTOGRAMS["width"], {})["bins"][-1]["hi"] is None


# --- Spark ----------------------------------------------------------------------------------


@pytest.mark.spark
def test_bin_index_agrees_with_numpy_at_the_edges(spark):
    spec = statistics.HISTOGRAMS["aspect_ratio"]
    values = [1.0, 1.1, 1.3, 13 / 10, 1.2999999, 2.95, 3.0, 3.5, 0.99, float("nan"), None, 1e300]
    df = spark.createDataFrame([(v,) for v in values], "x double")
    got = [r["b"] for r in df.select(statistics.bin_index(df["x"], spec).alias("b")).collect()]
    edges = np.array(spec.edges)
    want = []
    for v in values:
        if v is None or math.isnan(v):
            want.append(statistics.NULL_BIN)
        elif v < edges[0]:
            want.append(statistics.OUTSIDE_BIN)
        else:
            want.append(int(np.searchsorted(edges, v, side="right") - 1))
    assert got == want
    closed = statistics.HISTOGRAMS["box_score"]
    df = spark.createDataFrame([(v,) for v in (0.0, 0.65, 1.0, 1.01, -0.1)], "x double")
    got = [r["b"] for r in df.select(statistics.bin_index(df["x"], closed).alias("b")).collect()]
    assert got == [0, 13, 19, statistics.OUTSIDE_BIN, statistics.OUTSIDE_BIN]


@pytest.mark.spark
def test_text_run_report_matches_funnel_and_parquet(spark, tmp_path, monkeypatch, capsys):
    good = [
        "a red bike leaning on the old stone wall",
        "the old wooden house near the river",
        "two dogs playing with a ball in the park",
        "a bowl of fresh fruit on a kitchen table",
    ]
    long_caption = "word " * 2000  # 10,000 characters: text-too-long, cut to 300 in the sample
    captions = good + [HOSTILE, long_caption, "un petit chat noir sur le tapis rouge", "a\x00b", None]
    path = write_pairs(tmp_path / "pairs.parquet", captions)
    out = tmp_path / "out"

    plans = []
    real = pipeline.report_statistics

    def recording(accepted, rejected, stages, per_reason):
        plans.extend([accepted._jdf.queryExecution().withCachedData(), rejected._jdf.queryExecution().withCachedData()])
        return real(accepted, rejected, stages, per_reason=per_reason)

    monkeypatch.setattr(pipeline, "report_statistics", recording)
    first_job = last_job_id(spark)
    assert pipeline.main(["--input", str(path), "--output", str(out), "--stages", "text"]) == 0
    printed = capsys.readouterr().out
    assert f"funnel:   {out}/report/funnel.json\nreport:   {out}/report/report.html\n" in printed

    funnel, page, parsed = read_report(out)
    assert_page_matches_funnel(funnel, page, parsed)
    assert check_histograms(funnel, out / "accepted") == {"caption_length", "word_count"}
    assert [s["data-chart"] for s in parsed.svgs] == ["funnel", "hist-caption_length", "hist-word_count"]

    # samples: every (stage, reason) of the funnel, the hostile caption only escaped, the long one cut
    samples = funnel["statistics"]["samples"]
    shown = {(g["stage"], g["reason"]): g for g in samples["groups"]}
    assert {k: g["count"] for k, g in shown.items()} == {
        (s["stage"], r): n for s in funnel["stages"] for r, n in s["reasons"].items()
    }
    assert all(len(g["rows"]) == min(g["count"], 5) for g in samples["groups"])
    (cut,) = shown[("text", reasons.TOO_LONG)]["rows"]
    assert len(cut["caption"]) == 300 and cut["caption_chars"] == 10_000
    assert [r["caption"] for r in shown[("text", reasons.TOO_FEW_WORDS)]["rows"]] == [HOSTILE]
    assert HOSTILE not in page and "<script" not in page
    assert HOSTILE in "".join(parsed.text)
    assert "a\\u0000b" in "".join(parsed.text)

    # the statistics read the stored stage frames only (the stage checkpoints): no source scan,
    # no Python UDF again
    def nodes(plan):
        yield plan
        for i in range(plan.children().size()):
            yield from nodes(plan.children().apply(i))

    assert len(plans) == 2
    roots = set()
    for plan in plans:
        found = list(nodes(plan))
        leaves = [n for n in found if n.children().size() == 0]
        assert {n.nodeName() for n in leaves} == {"LogicalRelation"}
        roots |= {str(n.relation().location().rootPaths().head()) for n in leaves}
        assert not [n for n in found if re.search(r"(?i)python|pandas|arrow", n.simpleString(1000))]
    assert {re.sub(r".*/_checkpoints/", "", r) for r in roots} == {"ingest", "text"}, roots

    # every job of the run has a description, the statistics their own
    descriptions = job_descriptions(spark, first_job)
    assert None not in descriptions
    assert {d.split(":")[0] for d in descriptions} >= {"ingest", "text", "write", "report"}
    assert "report: statistics" in descriptions


@pytest.mark.spark
def test_no_accepted_rows_and_no_rejects_still_give_a_report(spark, tmp_path):
    path = write_pairs(tmp_path / "pairs.parquet", ["the old wooden house near the river", "a red bike by the wall"])
    none_kept = tmp_path / "none-kept"
    argv = ["--input", str(path), "--stages", "text"]
    assert pipeline.main([*argv, "--output", str(none_kept), "--set", "text.min_chars=900"]) == 0
    funnel, page, parsed = read_report(none_kept)
    assert funnel["accepted"] == 0 and funnel["rejected"] == 2
    assert_page_matches_funnel(funnel, page, parsed)
    hist_svgs = [s for s in parsed.svgs if s["data-chart"].startswith("hist-")]
    assert hist_svgs and all(s.get("data-empty") == "true" for s in hist_svgs)
    assert all("".join(parsed.svg_text[s["data-chart"]]) == "no rows" for s in hist_svgs)
    assert [len(g["rows"]) for g in funnel["statistics"]["samples"]["groups"]] == [2]

    all_kept = tmp_path / "all-kept"
    assert pipeline.main([*argv, "--output", str(all_kept)]) == 0
    funnel, page, parsed = read_report(all_kept)
    assert funnel["accepted"] == 2 and funnel["rejected"] == 0
    assert_page_matches_funnel(funnel, page, parsed)
    assert check_histograms(funnel, all_kept / "accepted") == {"caption_length", "word_count"}
    assert funnel["statistics"]["samples"]["groups"] == []
    assert "no rejected rows" in "".join(parsed.text)


@pytest.mark.spark
def test_demo_report_images_duplicates_and_boxes(spark, tmp_path, capsys):
    """The demo on 100 rows (images from 127.0.0.1, dedup, detect + ground): every chart."""
    out = tmp_path / "demo"
    first_job = last_job_id(spark)
    assert cli.main(["demo", "--output", str(out), "--rows", "100"]) == 0
    descriptions = job_descriptions(spark, first_job)
    assert None not in descriptions
    stages = {"ingest", "text", "image", "dedup", "detect", "ground", "write", "report"}
    assert {d.split(":")[0] for d in descriptions} == stages
    assert f"report:   {out}/report/report.html" in capsys.readouterr().out
    funnel, page, parsed = read_report(out)
    assert_page_matches_funnel(funnel, page, parsed)
    names = check_histograms(funnel, out / "accepted")
    assert names == {"width", "height", "aspect_ratio", "caption_length", "word_count", "box_score"}
    titles = [s["aria-label"] for s in parsed.svgs]
    assert titles == [
        "Funnel: rows per stage and reason",
        "Boxes table: verdicts",
        "Width (pixels)",
        "Height (pixels)",
        "Aspect ratio (long side / short side)",
        "Caption length (characters)",
        "Word count",
        "Box scores (noun_chunks)",
        "Duplicate group sizes",
    ]
    scores = {h["name"]: h for h in funnel["statistics"]["histograms"]}["box_score"]
    assert sum(b["count"] for b in scores["bins"]) > funnel["accepted"]  # several boxes per pair

    # duplicate groups recomputed from the rejected parquet
    rejected = pq.read_table(out / "rejected").to_pandas()
    dedup = rejected[(rejected["stage"] == "dedup") & rejected["reason"].isin(statistics.DUPLICATE_REASONS)]
    winners = Counter(re.fullmatch(statistics.WINNER_PATTERN, d).groups() for d in dedup["detail"])
    sizes = [n + 1 for n in winners.values()]
    dup = funnel["statistics"]["duplicate_groups"]
    assert sizes and dup["groups"] == len(sizes) and dup["rows"] == sum(sizes) and dup["max_size"] == max(sizes)
    assert [b["count"] for b in dup["bins"]] == bin_counts(sizes, dup)
    # samples for every reason, images' rejects included
    groups = {(g["stage"], g["reason"]) for g in funnel["statistics"]["samples"]["groups"]}
    assert ("image", reasons.LOW_RESOLUTION) in groups and ("dedup", reasons.DUPLICATE_PAIR) in groups
