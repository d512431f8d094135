"""The run's report as one static HTML page: ``OUTPUT/report/report.html``.

Pure Python, no Spark: ``render_report`` turns the dict the pipeline writes to
``funnel.json`` (the funnel per stage and reason, the ``boxes`` block, and the
``statistics`` block of jobs.statistics) into HTML with inline SVG charts. The
page opens offline: no script, no stylesheet or font to fetch, and a
Content-Security-Policy that forbids both, so a caption that slipped through
escaping still could not run.

Every bar carries ``data-chart``, ``data-key`` and ``data-count`` attributes
(and a ``<title>`` tooltip), so a test, or a reader's script, can check the
page's numbers against ``funnel.json`` without a browser.

Every string that comes from the data (captions, URLs, details, dump names)
is escaped with ``html.escape``; control and format characters (bidi
overrides, zero-width spaces, NUL ...) are shown as ``\\uXXXX`` escapes.
"""

from __future__ import annotations

import html
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
}

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


def histogram_chart(chart: str, title: str, bins: list[dict[str, Any]], unit: str = "rows", note: str = "") -> str:
    """Vertical bars, one per bin (``label``, ``count``), y axis from 0 to the largest count."""
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
    parts.append("</svg>")
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
    if extra:
        note = (note + " " if note else "") + "Not shown: " + ", ".join(extra) + "."
    return histogram_chart(f"hist-{hist['name']}", hist["title"], hist["bins"], hist["unit"], note)


def _sample_caption(text: Any, chars: Any) -> str:
    if text is None:
        return '<span class="cut">null</span>'
    cut = "" if chars is None or chars <= len(text) else f' <span class="cut">… ({fmt_count(chars)} characters)</span>'
    return esc(text) + cut


def samples_section(samples: dict[str, Any]) -> str:
    """A table of sample rejected rows per (stage, reason)."""
    groups = samples.get("groups", [])
    if not groups:
        return "<p>no rejected rows</p>"
    out = []
    for group in groups:
        shown = len(group["rows"])
        head = f"{group['stage']} / {group['reason']}: {shown} of {fmt_count(group['count'])} rejected rows"
        out.append(f'<h3 data-stage="{esc(group["stage"])}" data-reason="{esc(group["reason"])}">{esc(head)}</h3>')
        out.append(
            '<table><colgroup><col style="width:11em"><col style="width:7em"><col style="width:22%">'
            '<col><col style="width:22%"></colgroup>'
            "<tr><th>id</th><th>dump</th><th>url</th><th>caption</th><th>detail</th></tr>"
        )
        for row in group["rows"]:
            out.append(
                f'<tr class="sample"><td class="num">{esc(row["id"])}</td><td>{esc(row["dump"])}</td>'
                f"<td>{_sample_caption(row['url'], row.get('url_chars'))}</td>"
                f"<td>{_sample_caption(row['caption'], row.get('caption_chars'))}</td>"
                f"<td>{_sample_caption(row['detail'], row.get('detail_chars'))}</td></tr>"
            )
        out.append("</table>")
    return "".join(out)


def render_report(report: dict[str, Any]) -> str:
    """The whole page for the dict written to funnel.json (the ``statistics`` block optional)."""
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
    if "samples" in stats:
        body.append(f"<h2>Sample rejected rows (up to {stats['samples']['per_reason']} per reason)</h2>")
        body.append(samples_section(stats["samples"]))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n"
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
