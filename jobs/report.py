"""The run's report as one static HTML page: ``OUTPUT/report/report.html``.

Pure Python, no Spark: ``render_report`` turns the dict the pipeline writes to
``funnel.json`` (the funnel per stage and reason, the ``boxes`` block, and the
``statistics`` block of jobs.statistics) and the thumbnails jobs.statistics
made into HTML: inline SVG charts (histograms with the config's bounds drawn
on them, the funnel, dumps over time), galleries of accepted and rejected
pairs, and the GRIT view (each grounded image with its boxes as an SVG
overlay). The page opens offline: no script, no stylesheet or font to fetch,
images only as JPEG ``data:`` URIs, and a Content-Security-Policy that
forbids anything else, so a caption that slipped through escaping still
could not run or load.

Every bar carries ``data-chart``, ``data-key`` and ``data-count`` attributes
(and a ``<title>`` tooltip), every drawn box its corners (``data-x-min`` ...),
every bound line its ``data-bound`` and ``data-value``, so a test, or a
reader's script, can check the page's numbers against ``funnel.json`` without
a browser.

Every string that comes from the data (captions, URLs, details, dump names)
is escaped with ``html.escape``; control and format characters (bidi
overrides, zero-width spaces, NUL ...) are shown as ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import html
import math
import unicodedata
from dataclasses import dataclass
from typing import Any

# Page and chart geometry (pixels of the SVG viewBox).
CHART_WIDTH = 760
LABEL_WIDTH = 250  # left column of the horizontal bar charts
BAR_AREA = 400
ROW_HEIGHT = 18
HIST_HEIGHT = 180
HIST_MARGIN = (20, 10, 86, 56)  # top, right, bottom, left: rotated bin labels below

COLOURS = {
    "rows_in": "#8c8c8c",
    "accepted": "#3a8a3a",
    "rejected": "#c0392b",
    "reason": "#e59a8f",
    "kept": "#3a8a3a",
    "box": "#7a9cc6",
    "bin": "#4a78b0",
    "bound": "#d35400",
    "other_box": "#555555",
}

# One colour per noun chunk in the GRIT view (chunk i gets CHUNK_COLOURS[i % 10]).
CHUNK_COLOURS = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#9a6324",
    "#469990",
    "#800000",
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
h3 { font-size: 1em; margin: 1.2em 0 .3em; }
figure { margin: 1em 0; } figcaption { font-weight: 600; margin-bottom: .3em; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 11px sans-serif; fill: #222; } svg .empty { font-size: 14px; fill: #777; }
table { border-collapse: collapse; margin: .3em 0 1em; font-size: 12px; table-layout: fixed; width: 100%; }
th, td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top;
  overflow-wrap: anywhere; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0 1em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.note { color: #555; font-size: 12px; } .cut { color: #999; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; }
.reasons { display: flex; flex-wrap: wrap; gap: 0 18px; align-items: flex-start; }
.reason { flex: 0 1 auto; max-width: 100%; } .reason h3 { max-width: 480px; }
.reason .gallery { display: flex; flex-wrap: wrap; } .reason .card { width: 150px; box-sizing: border-box; }
.card { margin: 0; padding: 6px; border: 1px solid #ddd; border-radius: 4px; font-size: 12px;
  overflow-wrap: anywhere; }
.card img { display: block; max-width: 128px; max-height: 128px; margin: 0 auto 4px; }
.card figcaption { font-weight: normal; } .card .detail { color: #a33; margin: 2px 0 0; }
.noimg { background: #eee; color: #555; font-size: 11px; padding: 6px; overflow-wrap: anywhere;
  min-height: 40px; max-height: 128px; overflow: hidden; }
.grit { display: flex; gap: 14px; margin: 1em 0; align-items: flex-start; }
.grit .frame { position: relative; flex: none; }
.grit .frame img, .grit .frame .noimg { display: block; position: absolute; left: 0; top: 0; padding: 0; }
.grit .overlay { position: absolute; left: 0; top: 0; }
.grit-text { font-size: 13px; } .grit-text p { margin: 0 0 4px; }
.legend { margin: 0; padding-left: 1.4em; } .swatch { display: inline-block; width: 10px; height: 10px;
  margin-right: 4px; border-radius: 2px; }
svg .boxlabel { font: bold 11px sans-serif; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
svg .boxlabel.other { font: 10px sans-serif; fill: #333; }
.legend li.other { color: #555; list-style: none; margin-left: -1.4em; }
.swatch.dashed { border: 1px dashed #555; width: 8px; height: 8px; background: none; }
svg .boundlabel { font-size: 10px; fill: #d35400; }
"""


# Control, format (bidi overrides, zero-width), surrogate, line / paragraph separator characters.
_HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def esc(value: Any) -> str:
    """Text from the data, safe in element content and in quoted attribute values."""
    return html.escape(visible(value), quote=True)


def visible(value: Any) -> str:
    """``str(value)`` with the characters of ``_HIDDEN`` shown as ``\\uXXXX``."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def fmt_count(n: int) -> str:
    return f"{n:,}"


def fmt_edge(x: float) -> str:
    """100.0 -> '100', 1.25 -> '1.25'."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass
class Bar:
    """One bar of a chart: ``key`` identifies it in ``data-key``; ``indent`` nests reasons under stages."""

    key: str
    label: str
    count: int
    colour: str
    indent: int = 0
    tooltip: str = ""


def _empty_svg(chart: str, title: str, height: int = 60) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {height}" width="{CHART_WIDTH}" '
        f'height="{height}" role="img" aria-label="{esc(title)}" data-chart="{esc(chart)}" data-empty="true">'
        f"<title>{esc(title)}</title>"
        f'<text class="empty" x="{CHART_WIDTH // 2}" y="{height // 2 + 5}" text-anchor="middle">no rows</text></svg>'
    )


def _figure(title: str, svg: str, note: str = "") -> str:
    note_html = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"<figure><figcaption>{esc(title)}</figcaption>{svg}{note_html}</figure>"


def hbar_chart(chart: str, title: str, bars: list[Bar], note: str = "") -> str:
    """Horizontal bars on one linear scale (the largest count spans the bar area), counts printed."""
    if not bars or not any(b.count for b in bars):
        return _figure(title, _empty_svg(chart, title), note)
    top = max(b.count for b in bars)
    height = ROW_HEIGHT * len(bars) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {height}" width="{CHART_WIDTH}" '
        f'height="{height}" role="img" aria-label="{esc(title)}" data-chart="{esc(chart)}">',
        f"<title>{esc(title)}</title>",
    ]
    for i, bar in enumerate(bars):
        y = 5 + i * ROW_HEIGHT
        width = 0.0 if bar.count == 0 else max(1.0, BAR_AREA * bar.count / top)
        tip = bar.tooltip or f"{bar.label}: {fmt_count(bar.count)}"
        parts.append(
            f'<g class="bar" data-chart="{esc(chart)}" data-key="{esc(bar.key)}" data-count="{bar.count}">'
            f"<title>{esc(tip)}</title>"
            f'<text x="{6 + 14 * bar.indent}" y="{y + 12}">{esc(bar.label)}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 2}" width="{width:.1f}" height="{ROW_HEIGHT - 5}" fill="{bar.colour}"/>'
            f'<text x="{LABEL_WIDTH + width + 4:.1f}" y="{y + 12}">{fmt_count(bar.count)}</text>'
            "</g>"
        )
    parts.append("</svg>")
    return _figure(title, "".join(parts), note)


def value_position(value: float, edges: list[float]) -> float | None:
    """Where ``value`` falls on an axis of equal-width bins with ``edges``, 0 to 1 (linear within
    its bin, so log-spaced edges give a log axis); None outside the edges."""
    if not edges or value < edges[0] or value > edges[-1]:
        return None
    n = len(edges) - 1
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        if value <= hi:
            return (i + ((value - lo) / (hi - lo) if hi > lo else 0.0)) / n
    return 1.0


def _bound_lines(
    chart: str, edges: list[float], bounds: list[dict[str, Any]], n_bins: int
) -> tuple[list[str], list[str]]:
    """(the SVG of the bounds inside the axis, notes on those beyond it)."""
    top, right, bottom, left = HIST_MARGIN
    plot_w = CHART_WIDTH - left - right
    # The axis covers the closed bins' edges; an open last bin is one more bin width.
    span = (len(edges) - 1) / n_bins if n_bins else 1.0
    parts, beyond = [], []
    for i, b in enumerate(bounds):
        pos = value_position(b["value"], edges)
        label = f"{b['key']} = {fmt_edge(b['value'])}"
        if pos is None:
            beyond.append(label)
            continue
        x = left + plot_w * pos * span
        parts.append(
            f'<g class="bound" data-chart="{esc(chart)}" data-bound="{esc(b["key"])}" data-value="{b["value"]!r}">'
            f"<title>{esc(label)}</title>"
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + HIST_HEIGHT}" stroke="{COLOURS["bound"]}" '
            'stroke-width="2" stroke-dasharray="6 3"/>'
            f'<text x="{x + (-4 if pos > 0.6 else 4):.1f}" y="{top + 4 + 12 * i}" class="boundlabel" '
            f'text-anchor="{"end" if pos > 0.6 else "start"}">{esc(label)}</text></g>'
        )
    return parts, beyond


def histogram_chart(
    chart: str,
    title: str,
    bins: list[dict[str, Any]],
    unit: str = "rows",
    note: str = "",
    edges: list[float] | None = None,
    bounds: list[dict[str, Any]] | None = None,
) -> str:
    """Vertical bars, one per bin (``label``, ``count``), y axis from 0 to the largest count; the
    ``bounds`` (``key``, ``value``) drawn as dashed lines where they fall on the bins' ``edges``."""
    total = sum(b["count"] for b in bins)
    if total == 0:
        return _figure(title, _empty_svg(chart, title), note)
    top_margin, right, bottom, left = HIST_MARGIN
    plot_w = CHART_WIDTH - left - right
    height = HIST_HEIGHT + top_margin + bottom
    step = plot_w / len(bins)
    peak = max(b["count"] for b in bins)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {height}" width="{CHART_WIDTH}" '
        f'height="{height}" role="img" aria-label="{esc(title)}" data-chart="{esc(chart)}" data-total="{total}">',
        f"<title>{esc(title)}</title>",
        # axes and the y scale: 0 and the tallest bar
        f'<line x1="{left}" y1="{top_margin + HIST_HEIGHT}" x2="{left + plot_w}" y2="{top_margin + HIST_HEIGHT}" '
        'stroke="#444"/>',
        f'<line x1="{left}" y1="{top_margin}" x2="{left}" y2="{top_margin + HIST_HEIGHT}" stroke="#444"/>',
        f'<text x="{left - 4}" y="{top_margin + HIST_HEIGHT}" text-anchor="end">0</text>',
        f'<text x="{left - 4}" y="{top_margin + 8}" text-anchor="end">{fmt_count(peak)}</text>',
        f'<text x="{left - 40}" y="{top_margin + HIST_HEIGHT // 2}" text-anchor="middle" '
        f'transform="rotate(-90 {left - 40} {top_margin + HIST_HEIGHT // 2})">{esc(unit)}</text>',
    ]
    label_every = max(1, len(bins) // 10)
    for i, b in enumerate(bins):
        x = left + i * step
        h = HIST_HEIGHT * b["count"] / peak
        tip = f"{b['label']}: {fmt_count(b['count'])} {unit}"
        parts.append(
            f'<g class="bin" data-chart="{esc(chart)}" data-key="{i}" data-label="{esc(b["label"])}" '
            f'data-count="{b["count"]}"><title>{esc(tip)}</title>'
            f'<rect x="{x + 1:.1f}" y="{top_margin + HIST_HEIGHT - h:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{COLOURS["bin"]}"/></g>'
        )
        if i % label_every == 0 or i == len(bins) - 1:
            cx = x + step / 2
            parts.append(
                f'<text x="{cx:.1f}" y="{top_margin + HIST_HEIGHT + 14}" text-anchor="end" '
                f'transform="rotate(-45 {cx:.1f} {top_margin + HIST_HEIGHT + 14})">{esc(b["label"])}</text>'
            )
    lines, beyond = _bound_lines(chart, edges or [], bounds or [], len(bins))
    parts.extend(lines)
    parts.append("</svg>")
    if beyond:
        note = (note + " " if note else "") + "Beyond the axis: " + ", ".join(beyond) + "."
    return _figure(title, "".join(parts), note)


def bin_labels(edges: list[float], open_end: bool, integer: bool) -> list[str]:
    """Labels of the bins ``[edges[i], edges[i+1])`` (the last one closed unless ``open_end``), and ``>= edges[-1]``."""
    labels = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        if integer:
            labels.append(fmt_edge(lo) if hi - lo == 1 else f"{fmt_edge(lo)}–{fmt_edge(hi - 1)}")
        else:
            labels.append(f"{fmt_edge(lo)}–{fmt_edge(hi)}")
    if open_end:
        labels.append(f"≥{fmt_edge(edges[-1])}")
    return labels


def funnel_bars(report: dict[str, Any]) -> list[Bar]:
    """Per stage: rows in, accepted, rejected, then rejected per reason (largest first)."""
    bars = []
    for stage in report.get("stages", []):
        name = stage["stage"]
        bars.append(Bar(f"{name}:rows_in", f"{name}: rows in", stage["rows_in"], COLOURS["rows_in"]))
        bars.append(Bar(f"{name}:accepted", "accepted", stage["accepted"], COLOURS["accepted"], indent=1))
        bars.append(Bar(f"{name}:rejected", "rejected", stage["rejected"], COLOURS["rejected"], indent=1))
        for reason, n in sorted(stage["reasons"].items(), key=lambda kv: (-kv[1], kv[0])):
            bars.append(Bar(f"{name}:reason:{reason}", reason, n, COLOURS["reason"], indent=2))
    return bars


def box_bars(boxes: dict[str, Any]) -> list[Bar]:
    """The Boxes table: rows in, each outcome of a valid box, each reject reason."""
    bars = [Bar("boxes_in", "boxes in", boxes["boxes_in"], COLOURS["rows_in"])]
    for outcome, n in sorted(boxes["outcomes"].items(), key=lambda kv: (-kv[1], kv[0])):
        colour = COLOURS["kept"] if outcome == "kept" else COLOURS["box"]
        bars.append(Bar(f"outcome:{outcome}", outcome, n, colour, indent=1))
    for reason, n in sorted(boxes["rejected"].items(), key=lambda kv: (-kv[1], kv[0])):
        bars.append(Bar(f"rejected:{reason}", reason, n, COLOURS["reason"], indent=1))
    return bars


def histogram_section(hist: dict[str, Any]) -> str:
    """One histogram of the statistics block as a figure; nulls and out-of-range values in the note."""
    extra = []
    if hist.get("nulls"):
        extra.append(f"{fmt_count(hist['nulls'])} {hist['unit']} without a value")
    if hist.get("outside"):
        extra.append(f"{fmt_count(hist['outside'])} {hist['unit']} outside the bins")
    note = hist.get("note", "")
    if hist.get("scale") == "log":
        note = (note + " " if note else "") + "Log scale: each bin spans the same ratio."
    if extra:
        note = (note + " " if note else "") + "Not shown: " + ", ".join(extra) + "."
    return histogram_chart(
        f"hist-{hist['name']}",
        hist["title"],
        hist["bins"],
        hist["unit"],
        note,
        edges=hist.get("edges"),
        bounds=hist.get("bounds"),
    )


def _sample_caption(text: Any, chars: Any) -> str:
    if text is None:
        return '<span class="cut">null</span>'
    cut = "" if chars is None or chars <= len(text) else f' <span class="cut">… ({fmt_count(chars)} characters)</span>'
    return esc(text) + cut


def _thumb(thumb: dict[str, Any] | None, images: dict[str, str], alt: str) -> str:
    """An ``<img>`` of a collected thumbnail (a JPEG ``data:`` URI), or '' when there is none."""
    if not thumb or thumb.get("key") not in images:
        return ""
    return (
        f'<img src="data:image/jpeg;base64,{images[thumb["key"]]}" width="{int(thumb["width"])}" '
        f'height="{int(thumb["height"])}" alt="{esc(alt)}">'
    )


def card(row: dict[str, Any], images: dict[str, str], detail: bool) -> str:
    """One pair of a gallery: its thumbnail, or its URL as text when it has none; caption, detail."""
    caption = row.get("caption")
    picture = _thumb(row.get("thumbnail"), images, caption or "")
    if not picture:
        picture = f'<div class="noimg">{_sample_caption(row.get("url"), row.get("url_chars"))}</div>'
    size = f" · {row['width']}×{row['height']}" if row.get("width") and row.get("height") else ""
    lines = [
        f'<figure class="card" data-id="{esc(row["id"])}" data-dump="{esc(row.get("dump"))}">{picture}',
        f"<figcaption>{_sample_caption(caption, row.get('caption_chars'))}</figcaption>",
        f'<p class="note">id {esc(row["id"])} · {esc(row.get("dump"))}{esc(size)}</p>',
    ]
    if detail:
        lines.append(f'<p class="detail">{_sample_caption(row.get("detail"), row.get("detail_chars"))}</p>')
    return "".join(lines) + "</figure>"


def gallery_section(gallery: dict[str, Any], images: dict[str, str]) -> str:
    rows = gallery.get("rows", [])
    if not rows:
        return "<p>no accepted rows</p>"
    cards = "".join(card(row, images, detail=False) for row in rows)
    return f'<div class="gallery" data-gallery="accepted">{cards}</div>'


def samples_section(samples: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """A gallery of sample rejected rows per (stage, reason)."""
    groups = samples.get("groups", [])
    if not groups:
        return "<p>no rejected rows</p>"
    out = []
    for group in groups:
        shown = len(group["rows"])
        head = f"{group['stage']} / {group['reason']}: {shown} of {fmt_count(group['count'])} rejected rows"
        cards = "".join(card(row, images or {}, detail=True) for row in group["rows"])
        out.append(
            f'<section class="reason"><h3 data-stage="{esc(group["stage"])}" data-reason="{esc(group["reason"])}">'
            f'{esc(head)}</h3><div class="gallery" data-gallery="rejected" data-stage="{esc(group["stage"])}" '
            f'data-reason="{esc(group["reason"])}">{cards}</div></section>'
        )
    return '<div class="reasons">' + "".join(out) + "</div>"


def _phrase(caption: str, start: Any, end: Any) -> str:
    try:
        return caption[int(start) : int(end)]
    except (TypeError, ValueError):
        return ""


def _entry(values: Any) -> bool:
    """A GRIT entry the view can draw: ``[start, end, x_min, y_min, x_max, y_max, score]``, all finite."""
    try:
        return len(values) == 7 and all(math.isfinite(float(v)) for v in values)
    except (TypeError, ValueError):
        return False


def _box_svg(kind: str, corners: list[float], size: tuple[int, int], colour: str, label: str, attrs: str) -> str:
    """One box on a ``size`` (width, height) image: a kept box solid, labelled above its top edge; any
    other dashed, with a short label inside its bottom edge (the full one is its tooltip)."""
    (x0, y0, x1, y1), (w, h) = corners, size
    kept = kind == "kept"
    dash = "" if kept else ' stroke-dasharray="5 4"'
    if kept:
        ty = y0 * h + 13 if y0 * h < 14 else y0 * h - 3
        shown = label
    else:
        ty = max(y1 * h - 3, y0 * h + 11)
        shown = label.split(":")[0]
    # Labels of boxes in the right half end at the box's right edge, so they stay on the image.
    tx, anchor = (x1 * w - 3, "end") if x0 + x1 > 1.0 else (x0 * w + 3, "start")
    return (
        f'<g class="box {kind}" {attrs} data-x-min="{x0!r}" data-y-min="{y0!r}" data-x-max="{x1!r}" '
        f'data-y-max="{y1!r}"><title>{esc(label)}</title>'
        f'<rect x="{x0 * w:.2f}" y="{y0 * h:.2f}" width="{(x1 - x0) * w:.2f}" height="{(y1 - y0) * h:.2f}" '
        f'fill="none" stroke="{colour}" stroke-width="{2 if kept else 1.5}"{dash}/>'
        f'<text x="{tx:.2f}" y="{ty:.2f}" text-anchor="{anchor}" class="boxlabel{"" if kept else " other"}" '
        f'fill="{colour}">{esc(shown)}</text></g>'
    )


def grounded_pair(index: int, row: dict[str, Any], images: dict[str, str]) -> str:
    """One grounded pair: its image (a grey frame without one) with every kept box in its chunk's
    colour and labelled with its phrase, a few suppressed / below-score boxes dashed, and a legend."""
    caption = row.get("caption") or ""
    thumb = row.get("thumbnail")
    picture = _thumb(thumb, images, caption)
    if picture:
        w, h = int(thumb["width"]), int(thumb["height"])
    else:
        ratio = (row.get("height") or 1) / (row.get("width") or 1)
        w, h = 256, max(32, min(768, round(256 * ratio)))
        picture = f'<div class="noimg" style="width:{w}px;height:{h}px">no image bytes in this run</div>'
    chart = f"grit-{index}"
    parts, legend = [], []
    pairs = zip(row["noun_chunks"], row.get("ref_exps") or row["noun_chunks"], strict=False)
    for i, (chunk, ref) in enumerate((c, r) for c, r in pairs if _entry(c) and _entry(r)):
        colour = CHUNK_COLOURS[i % len(CHUNK_COLOURS)]
        phrase, expression = _phrase(caption, chunk[0], chunk[1]), _phrase(caption, ref[0], ref[1])
        attrs = f'data-chunk="{i}" data-start="{int(chunk[0])}" data-end="{int(chunk[1])}" data-score="{chunk[6]!r}"'
        parts.append(_box_svg("kept", [float(c) for c in chunk[2:6]], (w, h), colour, phrase, attrs))
        same = expression == phrase
        legend.append(
            f'<li><span class="swatch" style="background:{colour}"></span><b>{esc(phrase)}</b>'
            + ("" if same else f" → {esc(expression)}")
            + f' <span class="note">{float(chunk[6]):.2f}</span></li>'
        )
    for other in row.get("others", []):
        label = f"{other['outcome']}: {_phrase(caption, other['start'], other['end'])} ({float(other['score']):.2f})"
        attrs = f'data-outcome="{esc(other["outcome"])}"'
        parts.append(_box_svg(other["outcome"], other["box"], (w, h), COLOURS["other_box"], label, attrs))
        legend.append(f'<li class="other"><span class="swatch dashed"></span>{esc(label)}</li>')
    title = f"boxes of id {row['id']}"
    overlay = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="overlay" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
        f'role="img" aria-label="{esc(title)}" data-chart="{chart}" data-id="{esc(row["id"])}">'
        f"<title>{esc(title)}</title>{''.join(parts)}</svg>"
    )
    return (
        f'<div class="grit" data-id="{esc(row["id"])}" data-dump="{esc(row.get("dump"))}">'
        f'<div class="frame" style="width:{w}px;height:{h}px">{picture}{overlay}</div>'
        f'<div class="grit-text"><p>{esc(caption)}</p><ol class="legend">{"".join(legend)}</ol>'
        f'<p class="note">id {esc(row["id"])} · {esc(row.get("dump"))}</p></div></div>'
    )


def grounded_section(grounded: dict[str, Any], images: dict[str, str]) -> str:
    rows = grounded.get("rows", [])
    if not rows:
        return "<p>no grounded rows</p>"
    return "".join(grounded_pair(i, row, images) for i, row in enumerate(rows))


def dumps_section(dumps: list[dict[str, Any]]) -> str:
    """Per committed dump: its accepted share as a bar, and its rejects per stage and reason."""
    if not dumps:
        return "<p>no committed dumps</p>"
    height = ROW_HEIGHT * len(dumps) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_WIDTH} {height}" width="{CHART_WIDTH}" '
        f'height="{height}" role="img" aria-label="Accepted share per dump" data-chart="dumps">',
        "<title>Accepted share per dump</title>",
    ]
    rows = []
    for i, d in enumerate(dumps):
        y = 5 + i * ROW_HEIGHT
        share = d["accepted"] / d["rows_in"] if d["rows_in"] else 0.0
        label = f"{d['dump']}: {fmt_count(d['accepted'])} of {fmt_count(d['rows_in'])} accepted ({share:.1%})"
        parts.append(
            f'<g class="bar" data-chart="dumps" data-key="{esc(d["dump"])}" data-count="{d["accepted"]}" '
            f'data-rows-in="{d["rows_in"]}"><title>{esc(label)}</title>'
            f'<text x="6" y="{y + 12}">{esc(d["dump"])}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 2}" width="{BAR_AREA}" height="{ROW_HEIGHT - 5}" '
            f'fill="{COLOURS["reason"]}"/>'
            f'<rect x="{LABEL_WIDTH}" y="{y + 2}" width="{BAR_AREA * share:.1f}" height="{ROW_HEIGHT - 5}" '
            f'fill="{COLOURS["accepted"]}"/>'
            f'<text x="{LABEL_WIDTH + BAR_AREA + 6}" y="{y + 12}">{share:.1%}</text></g>'
        )
        recorded = d.get("reasons")
        if recorded is None:
            why = (
                '<span class="cut">per stage only: '
                + esc(", ".join(f"{s} {fmt_count(n)}" for s, n in d["rejected"].items()))
                + "</span>"
            )
        else:
            why = esc(
                ", ".join(
                    f"{s}/{r} {fmt_count(n)}"
                    for s, per in recorded.items()
                    for r, n in sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))
                )
            )
        when = d.get("committed_at") or "this run"
        rows.append(
            f'<tr data-dump="{esc(d["dump"])}"><td>{esc(d["dump"])}</td><td>{esc(when)}</td>'
            f'<td class="num">{fmt_count(d["rows_in"])}</td><td class="num">{fmt_count(d["accepted"])}</td>'
            f'<td class="num">{share:.1%}</td><td>{why}</td></tr>'
        )
    parts.append("</svg>")
    table = (
        '<table><colgroup><col style="width:12em"><col style="width:12em"><col style="width:7em">'
        '<col style="width:7em"><col style="width:6em"><col></colgroup>'
        "<tr><th>dump</th><th>committed</th><th>rows in</th><th>accepted</th><th>share</th>"
        "<th>rejected per stage / reason</th></tr>" + "".join(rows) + "</table>"
    )
    note = "Green: the share of the dump's rows accepted by its last stage. From the commit markers."
    return _figure("Accepted share per dump", "".join(parts), note) + table


def render_report(report: dict[str, Any], images: dict[str, str] | None = None) -> str:
    """The whole page for the dict written to funnel.json (the ``statistics`` block optional);
    ``images``: the thumbnails its galleries name (base64 JPEG by key), drawn as ``data:`` URIs."""
    images = images or {}
    stats = report.get("statistics", {})
    title = f"winnow report: {report.get('input', '')}"
    meta = [
        ("input", f"{report.get('input', '')} ({report.get('input_format', '')})"),
        ("output", report.get("output", "")),
        ("stages", " → ".join(s["stage"] for s in report.get("stages", []))),
        ("rows in", fmt_count(report.get("rows_in", 0))),
        ("accepted", fmt_count(report.get("accepted", 0))),
        ("rejected", fmt_count(report.get("rejected", 0))),
        ("seconds", report.get("seconds", "")),
        ("winnow", report.get("winnow_version", "")),
    ]
    body = [
        f"<h1>{esc(title)}</h1>",
        '<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta) + "</dl>",
        "<h2>Funnel</h2>",
        hbar_chart(
            "funnel",
            "Funnel: rows per stage and reason",
            funnel_bars(report),
            "Each stage: rows in = accepted + rejected; the rejected rows per reason below. "
            "One linear scale for the whole chart.",
        ),
    ]
    if "boxes" in report:
        body.append(
            hbar_chart(
                "boxes",
                "Boxes table: verdicts",
                box_bars(report["boxes"]),
                "Rows of the Boxes table: outcome of each valid box, or the reason it was rejected.",
            )
        )
    hists = stats.get("histograms", [])
    body.append("<h2>Accepted rows</h2>")
    if hists:
        body.extend(histogram_section(h) for h in hists)
    else:
        body.append("<p>no statistics</p>")
    if "duplicate_groups" in stats:
        dup = stats["duplicate_groups"]
        body.append("<h2>Duplicates</h2>")
        note = (
            f"{fmt_count(dup['groups'])} groups, {fmt_count(dup['rows'])} rows (winners included), "
            f"largest {fmt_count(dup['max_size'])}. A group is one winner and the dedup rejects that name it."
        )
        body.append(histogram_chart("duplicate-groups", "Duplicate group sizes", dup["bins"], "groups", note))
    if "grounded" in stats:
        grounded = stats["grounded"]
        body.append(f"<h2>Grounded pairs (GRIT): boxes on the images, {len(grounded['rows'])} pairs</h2>")
        body.append(
            '<p class="note">Each kept box in its noun chunk\'s colour, labelled with the chunk; the legend gives '
            "the referring expression (→) and the score. Dashed grey: up to "
            f"{grounded['others_per_outcome']} suppressed and below-score boxes per pair.</p>"
        )
        body.append(grounded_section(grounded, images))
    if "gallery" in stats:
        body.append(f"<h2>Accepted pairs (a sample of up to {stats['gallery']['size']}, by id)</h2>")
        body.append(gallery_section(stats["gallery"], images))
    if "samples" in stats:
        body.append(f"<h2>Sample rejected rows (up to {stats['samples']['per_reason']} per reason)</h2>")
        body.append(samples_section(stats["samples"], images))
    if stats.get("dumps"):
        body.append(f"<h2>Dumps over time ({len(stats['dumps'])} committed)</h2>")
        body.append(dumps_section(stats["dumps"]))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
