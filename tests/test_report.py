"""The report: report.html (jobs.report, no Spark) and its statistics (jobs.statistics, Spark).

The page is checked without a browser: html.parser reads the ``data-*``
attributes every bar carries, and they must equal funnel.json; the histogram
counts are recomputed here with numpy over the written parquet, bin by bin;
the GRIT overlays' boxes are compared with the accepted rows'. Then headless
Chromium (tests/browser.py) opens the demo's report: no console error, no
request, every image decoded, a screenshot under build/.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import re
import threading
from collections import Counter
from contextlib import redirect_stdout
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from browser import find_chromium, open_page
from PIL import Image
from pyspark.sql import functions as F

from jobs import cli, pipeline, statistics
from jobs.report import CHART_WIDTH, HIST_MARGIN, bin_labels, render_report, value_position, visible
from schemas import reasons
from udfs.grounding import GroundConfig
from udfs.image import ImageConfig, thumbnail
from udfs.text_rules import TextConfig

REPO = Path(__file__).resolve().parent.parent
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
    # an empty chart has no bars at all; the dumps' bars are drawn when every share is 0 too
    bars = {chart: keys for chart, keys in bars.items() if any(keys.values())}
    if stats.get("dumps"):
        bars["dumps"] = {d["dump"]: d["accepted"] for d in stats["dumps"]}
    return bars


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
    # offline: nothing to fetch, nothing to run; the only images are JPEG data: URIs
    assert not [t for t, a in parsed.tags if t in ("script", "link", "iframe", "object", "embed", "image")]
    assert not [a for _, a in parsed.tags if any(k.startswith("on") or k == "href" for k in a)]
    assert [a for t, a in parsed.tags if "src" in a] == [a for t, a in parsed.tags if t == "img"]
    assert all(a["src"].startswith("data:image/jpeg;base64,") for t, a in parsed.tags if t == "img")
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


# Fixed bins for the hand-made reports: 0 to 2,000 by 100 with an open last bin.
WIDTH_BINS = dataclasses.replace(statistics.HISTOGRAMS["width"], edges=statistics.even_edges(0, 100, 20), open_end=True)


def report_dict(**extra) -> dict:
    """A small funnel.json by hand: two stages, boxes, one histogram, duplicates, samples."""
    hist = statistics._bins(WIDTH_BINS, {0: 0, 2: 5, 20: 1, -1: 2})
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
    report["statistics"]["histograms"][0] = statistics._bins(WIDTH_BINS, {})
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
    scores = dataclasses.replace(statistics.HISTOGRAMS["box_score"], edges=statistics.even_edges(0.0, 0.05, 20))
    closed = statistics._bins(scores, {19: 4})
    assert len(closed["bins"]) == 20 and closed["bins"][-1] == {"lo": 0.95, "hi": 1.0, "label": "0.95–1", "count": 4}
    assert statistics._bins(WIDTH_BINS, {})["bins"][-1]["hi"] is None


def test_bins_come_from_the_data():
    # linear: a round step, every value inside, at most MAX_BINS bins
    edges, scale = statistics.data_edges(254.0, 640.0, integer=True)
    assert scale == "linear" and edges[0] <= 254 and edges[-1] > 640 and len(edges) - 1 <= statistics.MAX_BINS
    assert len({round(b - a, 9) for a, b in zip(edges, edges[1:], strict=False)}) == 1 and edges[1] - edges[0] == 25
    # small integers: one bin per value
    assert statistics.data_edges(3.0, 16.0, integer=True) == (tuple(float(x) for x in range(3, 18)), "linear")
    # a spread over decades: log-spaced, each bin about the same ratio
    edges, scale = statistics.data_edges(12.0, 9000.0, integer=True)
    assert scale == "log" and edges[0] == 12 and edges[-1] == 9001 and len(edges) - 1 <= statistics.MAX_BINS
    ratios = [b / a for a, b in zip(edges[1:], edges[2:-1], strict=False)]
    assert max(ratios) / min(ratios) < 1.1
    edges, scale = statistics.data_edges(0.004, 0.99, integer=False)
    assert scale == "log" and edges[0] == 0.004 and edges[-1] == 0.99
    # one value only, and floats that would not land on round edges
    ((lo, hi), _) = statistics.data_edges(4 / 3, 4 / 3, integer=False)
    assert lo < 4 / 3 < hi and hi - lo <= 0.2
    assert statistics.data_edges(384.0, 384.0, integer=True)[0] == (384.0, 385.0)
    edges, _ = statistics.data_edges(0.66, 0.99, integer=False)
    assert edges[0] <= 0.66 and edges[-1] >= 0.99 and len(edges) - 1 <= statistics.MAX_BINS
    assert (
        statistics.nice_step(0.0165) == 0.02 and statistics.nice_step(19.3) == 20 and statistics.nice_step(2.1) == 2.5
    )


def test_bounds_come_from_the_run_config():
    config = {
        "run": {"stages": ["text", "image"]},
        "text": {"min_chars": 9, "max_chars": 700},
        "image": {"min_side": 300},
        "ground": {"min_score": 0.5},
    }
    spec = statistics.HISTOGRAMS["caption_length"]
    assert statistics.bound_values(spec, config) == [
        {"key": "text.min_chars", "value": 9.0},
        {"key": "text.max_chars", "value": 700.0},
    ]
    assert statistics.bound_values(statistics.HISTOGRAMS["box_score"], config) == []  # ground did not run
    chinese = {**config, "text": {**config["text"], "language": "zh"}, "text_zh": {"min_chars": 5, "max_chars": 256}}
    assert [b["key"] for b in statistics.bound_values(spec, chinese)] == ["text_zh.min_chars", "text_zh.max_chars"]
    assert statistics.bound_values(spec, None) == []
    bounds = statistics.bound_values(spec, config)
    # 9 is within reach of captions of 30..120 characters, 700 is not
    assert statistics.axis_range(30.0, 120.0, bounds) == (9.0, 120.0)
    # every bound key names a real config field, with the published value as its default
    defaults = {"text": TextConfig(), "image": ImageConfig(), "ground": GroundConfig()}
    keys = {key for spec in statistics.HISTOGRAMS.values() for key in spec.bounds}
    got = {key: getattr(defaults[key.split(".")[0]], key.split(".")[1]) for key in keys}
    assert got == {
        "image.min_side": 200,
        "image.max_aspect_ratio": 3.0,
        "text.min_chars": 6,
        "text.max_chars": 1000,
        "text.min_words": 3,
        "text.max_words": 256,
        "ground.min_score": 0.65,
    }


def test_bounds_are_drawn_where_they_fall():
    spec = dataclasses.replace(statistics.HISTOGRAMS["word_count"], edges=tuple(float(x) for x in range(2, 23, 2)))
    bounds = [{"key": "text.min_words", "value": 3.0}, {"key": "text.max_words", "value": 256.0}]
    hist = statistics._bins(spec, {0: 1, 4: 7}, bounds)
    parsed = parse(render_report(report_dict(statistics={"histograms": [hist]})))
    drawn = [a for t, a in parsed.tags if t == "g" and a.get("class") == "bound"]
    assert [(a["data-bound"], float(a["data-value"])) for a in drawn] == [("text.min_words", 3.0)]
    (line,) = [a for t, a in parsed.tags if t == "line" and a.get("stroke-dasharray")]
    _, right, _, left = HIST_MARGIN
    plot_w = CHART_WIDTH - left - right
    assert float(line["x1"]) == pytest.approx(left + plot_w * value_position(3.0, list(spec.edges)), abs=0.06)
    assert value_position(3.0, [2.0, 4.0, 6.0]) == 0.25 and value_position(7.0, [2.0, 4.0, 6.0]) is None
    assert "Beyond the axis: text.max_words = 256." in "".join(parsed.text)


def png_bytes(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def test_thumbnails_are_small_jpegs_or_nothing():
    thumb = thumbnail(png_bytes(640, 320), 128, 12_000)
    assert (thumb.width, thumb.height) == (128, 64)
    with Image.open(io.BytesIO(thumb.data)) as img:
        assert img.format == "JPEG" and img.size == (128, 64)
    assert thumbnail(png_bytes(100, 50), 128, 12_000).width == 100  # never enlarged
    truncated = png_bytes(300, 300)[:200]
    bomb = png_bytes(20, 20).replace((20).to_bytes(4, "big") * 2, (60000).to_bytes(4, "big") * 2, 1)
    for bad in (None, b"", b"not an image", truncated, bomb):
        assert thumbnail(bad, 128, 12_000) is None
    noise = Image.effect_noise((128, 128), 100).convert("RGB")
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert thumbnail(buf.getvalue(), 128, 500) is None  # does not fit the byte cap at any quality


def grit_row(**extra) -> dict:
    caption = "a red circle next to a blue square"
    row = {
        "id": 11,
        "dump": "d1",
        "caption": caption,
        "noun_chunks": [[0, 12, 0.1, 0.2, 0.45, 0.7, 0.9], [22, 35, 0.5, 0.25, 0.95, 0.8, 0.8]],
        "ref_exps": [[0, 35, 0.1, 0.2, 0.45, 0.7, 0.9], [22, 35, 0.5, 0.25, 0.95, 0.8, 0.8]],
        "width": 400,
        "height": 200,
        "thumbnail": None,
        "others": [{"outcome": "below-score", "start": 22, "end": 35, "box": [0.0, 0.0, 0.3, 0.3], "score": 0.4}],
    }
    row.update(extra)
    return row


def overlay_boxes(parsed: Page) -> dict[str, list[dict[str, str]]]:
    """The boxes of each GRIT overlay, by the pair's id."""
    out: dict[str, list[dict[str, str]]] = {}
    current = None
    for tag, attrs in parsed.tags:
        if tag == "svg":
            current = attrs.get("data-id") if attrs.get("class") == "overlay" else None
        elif tag == "g" and "box" in attrs.get("class", "").split() and current is not None:
            out.setdefault(current, []).append(attrs)
    return out


def test_grit_overlay_draws_each_box_in_its_chunk_colour():
    stats = {"histograms": [], "grounded": {"size": 8, "others_per_outcome": 2, "rows": [grit_row()]}}
    page = render_report(report_dict(statistics=stats))
    parsed = parse(page)
    (boxes,) = overlay_boxes(parsed).values()
    kept = [b for b in boxes if b["class"] == "box kept"]
    assert [[float(b[k]) for k in ("data-x-min", "data-y-min", "data-x-max", "data-y-max")] for b in kept] == [
        c[2:6] for c in grit_row()["noun_chunks"]
    ]
    rects = [a for t, a in parsed.tags if t == "rect" and a.get("fill") == "none"]
    assert [float(r["x"]) for r in rects[:2]] == pytest.approx([0.1 * 256, 0.5 * 256], abs=0.01)
    assert len({r["stroke"] for r in rects[:2]}) == 2  # one colour per chunk
    assert [b["data-outcome"] for b in boxes if b["class"] != "box kept"] == ["below-score"]
    assert rects[2].get("stroke-dasharray") and not rects[0].get("stroke-dasharray")
    text = "".join(parsed.text)
    assert "a red circle" in text and "a red circle next to a blue square" in text  # chunk and its expression
    assert "no image bytes in this run" in text  # no thumbnail: a grey frame, never a remote image
    # entries the view cannot draw are left out, not a crash
    broken = grit_row(
        noun_chunks=[[0, 12, None, 0.2, 0.4, 0.7, 0.9], [0, 5, 0.1], grit_row()["noun_chunks"][1]], ref_exps=None
    )
    stats["grounded"]["rows"] = [broken]
    (boxes,) = overlay_boxes(parse(render_report(report_dict(statistics=stats)))).values()
    assert [b["data-start"] for b in boxes if b["class"] == "box kept"] == ["22"]


def test_dumps_over_time_from_markers():
    markers = {
        "2026-02": {
            "run_id": "r2",
            "committed_at": "2026-02-02T00:00:00Z",
            "stages": {"text": {"accepted": 6, "rejected": 4}, "ingest": {"accepted": 10, "rejected": 0}},
            "reasons": {"ingest": {}, "text": {"text-too-short": 3, "text-no-noun": 1}},
        },
        "2026-01": {  # written before markers recorded reasons
            "run_id": "r1",
            "committed_at": "2026-01-02T00:00:00Z",
            "stages": {"ingest": {"accepted": 8, "rejected": 2}, "text": {"accepted": 5, "rejected": 3}},
        },
    }
    dumps = statistics.dumps_over_time(markers)
    assert [(d["dump"], d["rows_in"], d["accepted"]) for d in dumps] == [("2026-01", 10, 5), ("2026-02", 10, 6)]
    assert dumps[0]["reasons"] is None and dumps[1]["reasons"]["text"] == {"text-too-short": 3, "text-no-noun": 1}
    assert len(statistics.dumps_over_time(markers, shown=1)) == 1
    report = report_dict()
    report["statistics"]["dumps"] = dumps
    page = render_report(report)
    parsed = parse(page)
    assert_page_matches_funnel(report, page, parsed)
    assert parsed.bars["dumps"] == {"2026-01": 5, "2026-02": 6}
    text = "".join(parsed.text)
    assert "per stage only: ingest 2, text 3" in text and "text/text-too-short 3, text/text-no-noun 1" in text
    assert "50.0%" in text and "60.0%" in text


# --- Spark ----------------------------------------------------------------------------------


@pytest.mark.spark
def test_bin_index_agrees_with_numpy_at_the_edges(spark):
    spec = statistics.HistogramSpec("aspect_ratio", "ratio", statistics.even_edges(1.0, 0.1, 20), open_end=True)
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
    closed = statistics.HistogramSpec("box_score", "scores", statistics.even_edges(0.0, 0.05, 20))
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

    def recording(accepted, rejected, stages, **kwargs):
        plans.extend([accepted._jdf.queryExecution().withCachedData(), rejected._jdf.queryExecution().withCachedData()])
        return real(accepted, rejected, stages, **kwargs)

    monkeypatch.setattr(pipeline, "report_statistics", recording)
    first_job = last_job_id(spark)
    argv = ["--input", str(path), "--output", str(out), "--stages", "text", "--set", "text.max_words=30"]
    assert pipeline.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"funnel:   {out}/report/funnel.json\nreport:   {out}/report/report.html\n" in printed

    funnel, page, parsed = read_report(out)
    assert_page_matches_funnel(funnel, page, parsed)
    assert check_histograms(funnel, out / "accepted") == {"caption_length", "word_count"}
    assert [s["data-chart"] for s in parsed.svgs] == ["funnel", "hist-caption_length", "hist-word_count", "dumps"]
    # the bounds drawn are the run's config: text.max_words as set, the others their defaults
    hists = {h["name"]: h for h in funnel["statistics"]["histograms"]}
    assert hists["word_count"]["bounds"] == [
        {"key": "text.min_words", "value": TextConfig().min_words},
        {"key": "text.max_words", "value": 30.0},
    ]
    drawn = {a["data-bound"]: float(a["data-value"]) for t, a in parsed.tags if a.get("class") == "bound"}
    assert drawn["text.max_words"] == 30.0 and drawn["text.min_words"] == TextConfig().min_words
    # no image bytes in a text run: every gallery card is text
    assert not [t for t, _ in parsed.tags if t == "img"]
    cards = [a for t, a in parsed.tags if t == "figure" and a.get("class") == "card"]
    assert len(cards) == len(funnel["statistics"]["gallery"]["rows"]) + sum(
        len(g["rows"]) for g in funnel["statistics"]["samples"]["groups"]
    )

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


@pytest.fixture(scope="module")
def demo_report(spark, tmp_path_factory):
    """The demo on 100 rows (images from 127.0.0.1, kept bytes, dedup, detect + ground): its output
    folder, what it printed, and the descriptions of its Spark jobs."""
    out = tmp_path_factory.mktemp("report") / "demo"
    first_job = last_job_id(spark)
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert cli.main(["demo", "--output", str(out), "--rows", "100"]) == 0
    return out, printed.getvalue(), job_descriptions(spark, first_job)


@pytest.mark.spark
def test_demo_report_images_duplicates_and_boxes(demo_report):
    """Every chart of the demo's report, its numbers recomputed from the parquet."""
    out, printed, descriptions = demo_report
    assert None not in descriptions
    stages = {"ingest", "text", "image", "dedup", "detect", "ground", "write", "report"}
    assert {d.split(":")[0] for d in descriptions} == stages
    assert f"report:   {out}/report/report.html" in printed
    funnel, page, parsed = read_report(out)
    assert_page_matches_funnel(funnel, page, parsed)
    names = check_histograms(funnel, out / "accepted")
    assert names == {"width", "height", "aspect_ratio", "caption_length", "word_count", "box_score"}
    titles = [s["aria-label"] for s in parsed.svgs]
    grounded = funnel["statistics"]["grounded"]["rows"]
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
        *[f"boxes of id {r['id']}" for r in grounded],
        "Accepted share per dump",
    ]
    # the published bounds, from the run's config, on the charts whose stage ran
    cfg = funnel["config"]
    drawn = {(a["data-chart"], a["data-bound"]): float(a["data-value"]) for _, a in parsed.tags if "data-bound" in a}
    assert drawn[("hist-width", "image.min_side")] == cfg["image"]["min_side"]
    assert drawn[("hist-aspect_ratio", "image.max_aspect_ratio")] == cfg["image"]["max_aspect_ratio"]
    assert drawn[("hist-box_score", "ground.min_score")] == cfg["ground"]["min_score"]
    assert drawn[("hist-word_count", "text.min_words")] == cfg["text"]["min_words"]
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


@pytest.mark.spark
def test_galleries_sample_by_id_and_show_bad_bytes_as_text(spark):
    from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType

    schema = StructType(
        [StructField(c, LongType() if c == "id" else StringType()) for c in ("id", "dump", "url", "caption")]
        + [StructField("image", BinaryType())]
    )
    images = [png_bytes(300, 200), b"\xff\xd8 not a jpeg", None, png_bytes(200, 600, (20, 90, 200)), b""]
    rows = [(i * 7 + 1, "d1", f"http://example.com/{i}.jpg", f"caption {i}", data) for i, data in enumerate(images)]
    frame = spark.createDataFrame(rows, schema)
    budget = statistics.Images()
    got = statistics.sample_accepted(frame, budget, n=4)
    # the 4 ids with the smallest hash, in that order, computed apart
    order = frame.select("id", (F.pmod(F.xxhash64("id"), F.lit(1 << 31))).alias("u")).orderBy("u", "id").limit(4)
    assert [r["id"] for r in got] == [r["id"] for r in order.collect()]
    with_image = {r["id"] for r in got if r["thumbnail"]}
    assert with_image == {rid for rid, _, _, _, data in rows if data and data.startswith(b"\x89PNG")} & {
        r["id"] for r in got
    }
    for key, text in budget.data.items():
        with Image.open(io.BytesIO(base64.b64decode(text))) as img:
            assert img.format == "JPEG" and max(img.size) <= statistics.THUMBNAIL_SIDE, key
    page = render_report(report_dict(statistics={"histograms": [], "gallery": {"size": 4, "rows": got}}), budget.data)
    parsed = parse(page)
    imgs = [a for t, a in parsed.tags if t == "img"]
    assert len(imgs) == len(with_image) and all(a["src"].startswith("data:image/jpeg;base64,") for a in imgs)
    text = "".join(parsed.text)
    assert all(r["url"] in text for r in got if not r["thumbnail"])  # text cards: the URL as text
    # a budget that holds one image: the rest become text cards
    one = statistics.Images(budget=len(next(iter(budget.data.values()))))
    assert sum(1 for r in statistics.sample_accepted(frame, one, n=4) if r["thumbnail"]) == 1

    # rejects: a thumbnail only where the row has bytes, a sample per reason
    rejected = frame.withColumn("stage", F.lit("dedup")).withColumn("detail", F.lit("why"))
    rejected = rejected.withColumn("reason", F.when(F.col("id") < 15, "duplicate-pair").otherwise("near-duplicate"))
    counts = {(r["stage"], r["reason"]): r["count"] for r in rejected.groupBy("stage", "reason").count().collect()}
    groups = statistics.sample_rejects(rejected, counts, per_reason=2, images=statistics.Images())
    assert {(g["stage"], g["reason"]): len(g["rows"]) for g in groups} == {k: min(n, 2) for k, n in counts.items()}
    for group in groups:
        for row in group["rows"]:
            data = images[(row["id"] - 1) // 7]
            assert (row["thumbnail"] is not None) == bool(data and data.startswith(b"\x89PNG")), row["id"]


@pytest.mark.spark
def test_dumps_over_time_across_incremental_runs(spark, tmp_path):
    crawl, out = tmp_path / "crawl", tmp_path / "out"
    captions = {
        "d1": ["a red bike leaning on the old stone wall", "tiny", "the old wooden house near the river"],
        "d2": ["two dogs playing with a ball in the park", "no", "x y", "a bowl of fresh fruit on a table"],
    }
    argv = ["--input", str(crawl), "--output", str(out), "--incremental", "--stages", "text"]
    for dump, texts in captions.items():
        (crawl / f"dump={dump}").mkdir(parents=True)
        rows = [{"url": f"http://x/{dump}/{i}", "caption": c} for i, c in enumerate(texts)]
        pq.write_table(pa.Table.from_pylist(rows), crawl / f"dump={dump}" / "part.parquet")
        assert pipeline.main(argv) == 0
    funnel, page, parsed = read_report(out)
    assert funnel["dumps"] == ["d2"]  # the second run read d2 only
    assert_page_matches_funnel(funnel, page, parsed)
    dumps = {d["dump"]: d for d in funnel["statistics"]["dumps"]}
    marker = json.loads((out / "_commits" / "dump=d1.json").read_text())
    assert dumps["d1"]["committed_at"] == marker["committed_at"] and dumps["d1"]["run_id"] == marker["run_id"]
    assert dumps["d2"]["committed_at"] is None and dumps["d2"]["run_id"] == funnel["run_id"]
    accepted = pq.read_table(out / "accepted").to_pandas()
    rejected = pq.read_table(out / "rejected").to_pandas()
    for dump, texts in captions.items():
        assert dumps[dump]["rows_in"] == len(texts)
        assert dumps[dump]["accepted"] == int((accepted["dump"] == dump).sum())
        mine = rejected[rejected["dump"] == dump]
        recorded = {(s, r): n for s, per in dumps[dump]["reasons"].items() for r, n in per.items()}
        assert recorded == Counter(zip(mine["stage"], mine["reason"], strict=True))
    assert parsed.bars["dumps"] == {"d1": 2, "d2": 2}


def galleries(parsed: Page) -> dict[tuple[str, str], list[dict[str, str]]]:
    """The cards of each gallery, ``("accepted", "")`` or ``(stage, reason)``, each card's attributes
    with the ``src`` of its image (if any) under ``img``."""
    out: dict[tuple[str, str], list[dict[str, str]]] = {}
    current = None
    for tag, attrs in parsed.tags:
        if tag == "div" and "data-gallery" in attrs:
            current = (
                ("accepted", "") if attrs["data-gallery"] == "accepted" else (attrs["data-stage"], attrs["data-reason"])
            )
            out[current] = []
        elif tag == "figure" and attrs.get("class") == "card":
            out[current].append(dict(attrs))
        elif tag == "img" and current is not None and out[current]:
            out[current][-1]["img"] = attrs["src"]
    return out


@pytest.mark.spark
def test_demo_galleries_show_the_images(demo_report):
    out, _, _ = demo_report
    funnel, page, parsed = read_report(out)
    stats = funnel["statistics"]
    shown = galleries(parsed)
    per_reason = stats["samples"]["per_reason"]
    expected = {(s["stage"], r): min(n, per_reason) for s in funnel["stages"] for r, n in s["reasons"].items()}
    assert {k: len(v) for k, v in shown.items() if k[0] != "accepted"} == expected
    assert len(shown[("accepted", "")]) == min(statistics.GALLERY_ACCEPTED, funnel["accepted"])
    # the demo keeps its images: every accepted card and every reject after the image stage has one
    assert all("img" in c for c in shown[("accepted", "")])
    after_image = [c for (stage, _), cards in shown.items() if stage in ("dedup", "ground") for c in cards]
    assert after_image and all("img" in c for c in after_image)
    assert not [c for (stage, _), cards in shown.items() if stage in ("ingest", "text") for c in cards if "img" in c]
    # every image is a JPEG data: URI of at most 128 px (GRIT's at most 256), nothing remote
    srcs = [a["src"] for t, a in parsed.tags if "src" in a]
    assert srcs and all(src.startswith("data:image/jpeg;base64,") for src in srcs)
    for src in srcs:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as img:
            assert img.format == "JPEG" and max(img.size) <= statistics.GRIT_SIDE
    for card in shown[("accepted", "")]:
        with Image.open(io.BytesIO(base64.b64decode(card["img"].split(",", 1)[1]))) as img:
            assert max(img.size) <= statistics.THUMBNAIL_SIDE
    # the accepted sample is the rows with the smallest hash of their id
    accepted = pq.read_table(out / "accepted", columns=["id"]).to_pandas()
    hashed = spark_hash_order(accepted["id"].tolist())
    assert [int(c["data-id"]) for c in shown[("accepted", "")]] == hashed[: statistics.GALLERY_ACCEPTED]
    # the page's size: the images within their budget, the rest is text
    assert stats["images"]["base64_chars"] <= statistics.IMAGE_BUDGET
    assert len(page.encode()) < statistics.IMAGE_BUDGET + 1_000_000


def spark_hash_order(ids: list[int]) -> list[int]:
    """``ids`` in the order of ``pmod(xxhash64(id), 2^31)`` (then id), as Spark computes it."""
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    frame = spark.createDataFrame([(i,) for i in ids], "id long")
    ordered = frame.select("id", F.pmod(F.xxhash64("id"), F.lit(1 << 31)).alias("u")).orderBy("u", "id")
    return [r["id"] for r in ordered.collect()]


@pytest.mark.spark
def test_demo_grit_overlay_boxes_are_the_accepted_rows_boxes(demo_report):
    out, _, _ = demo_report
    funnel, page, parsed = read_report(out)
    accepted = pq.read_table(out / "accepted", columns=["id", "dump", "noun_chunks", "caption"]).to_pandas()
    chunks = {str(r.id): [list(c) for c in r.noun_chunks] for r in accepted.itertuples()}
    drawn = overlay_boxes(parsed)
    grounded = funnel["statistics"]["grounded"]["rows"]
    assert len(grounded) == min(statistics.GRIT_SAMPLE, funnel["accepted"]) and set(drawn) == {
        str(r["id"]) for r in grounded
    }
    corners = ("data-x-min", "data-y-min", "data-x-max", "data-y-max")
    for pair_id, boxes in drawn.items():
        kept = [b for b in boxes if b["class"] == "box kept"]
        assert [
            [int(b["data-start"]), int(b["data-end"]), *(float(b[k]) for k in corners), float(b["data-score"])]
            for b in kept
        ] == chunks[pair_id]
        assert len({b["data-chunk"] for b in kept}) == len(kept)
    # the overlay sits on the image: rect coordinates are the box times the thumbnail's size
    frames = {a["data-id"]: (int(a["width"]), int(a["height"])) for t, a in parsed.tags if a.get("class") == "overlay"}
    rects = [a for t, a in parsed.tags if t == "rect" and a.get("fill") == "none"]
    boxes = [b for bs in drawn.values() for b in bs]
    owners = [pid for pid, bs in drawn.items() for _ in bs]
    assert len(rects) == len(boxes)
    for rect, box, pid in zip(rects, boxes, owners, strict=True):
        w, h = frames[pid]
        assert float(rect["x"]) == pytest.approx(float(box["data-x-min"]) * w, abs=0.01)
        assert float(rect["height"]) == pytest.approx(
            (float(box["data-y-max"]) - float(box["data-y-min"])) * h, abs=0.02
        )
        assert bool(rect.get("stroke-dasharray")) == (box["class"] != "box kept")
    # a few boxes the stage did not keep, dashed, as the box verdicts have them
    verdicts = pq.read_table(out / "boxes").to_pandas()
    others = [(pid, b) for pid, bs in drawn.items() for b in bs if b["class"] != "box kept"]
    assert others, "the demo has below-score boxes on accepted pairs"
    for pid, b in others:
        mine = verdicts[(verdicts["id"] == int(pid)) & (verdicts["outcome"] == b["data-outcome"])]
        got = [float(b[k]) for k in corners]
        assert any(np.allclose(got, [v.x_min, v.y_min, v.x_max, v.y_max]) for v in mine.itertuples()), (pid, got)


@pytest.mark.spark
def test_demo_report_in_headless_chromium(demo_report):
    executable = chromium()
    out, _, _ = demo_report
    report = (out / "report" / "report.html").resolve()
    check = open_page(executable, report.as_uri())
    assert check.console_errors == []
    # nothing fetched: the page itself, and its data: images (Chromium reports them as requests too)
    assert [u for u in check.requests if u != report.as_uri() and not u.startswith("data:")] == []
    _, page, parsed = read_report(out)
    assert len(check.images) == len([t for t, _ in parsed.tags if t == "img"]) > 0
    assert [i for i in check.images if not (i["complete"] and i["naturalWidth"] > 0)] == []
    shot = REPO / "build" / "report-screenshot.png"
    shot.parent.mkdir(exist_ok=True)
    shot.write_bytes(check.screenshot)
    with Image.open(shot) as img:
        assert img.format == "PNG" and img.size[0] >= 1000 and img.size[1] == check.size[1] > 2000


def chromium() -> str:
    """The browser, or a skip saying how to get it (a failure where CI asks for it: .ci/run sets
    WINNOW_REQUIRE_CHROMIUM=1 after installing it)."""
    executable = find_chromium()
    if executable is None:
        why = "no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
        if os.environ.get("WINNOW_REQUIRE_CHROMIUM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return executable


class _Remote(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = png_bytes(4, 4)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_the_browser_check_sees_requests_errors_and_broken_images(tmp_path):
    """The same check on a page that breaks each rule: it must report all of them."""
    executable = chromium()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Remote)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = f"http://127.0.0.1:{server.server_port}/x.png"
        bad = tmp_path / "bad.html"
        bad.write_text(
            f'<!DOCTYPE html><html><body><img src="{remote}"><img src="data:image/jpeg;base64,AAAA">'
            '<script>console.error("planted")</script></body></html>'
        )
        check = open_page(executable, bad.as_uri())
    finally:
        server.shutdown()
        server.server_close()
    assert remote in check.requests
    assert any("planted" in e for e in check.console_errors)
    assert [i["naturalWidth"] for i in check.images] == [4, 0]
