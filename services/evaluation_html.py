"""The HTML report of `skipwatch evaluate --html DIR`: tables and inline SVG charts, no scripts,
no external resources (it opens from a file, offline, and can be checked into the repo)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rules.evaluation import ALL_RULES, LEVELS

_PALETTE = (
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
    "#1f78b4",
    "#b2df8a",
    "#fb9a99",
    "#cab2d6",
)
_OUTCOME_COLOURS = {
    "caught": "#1b9e77",
    "late": "#e6ab02",
    "warned": "#7570b3",
    "missed": "#d95f02",
    "critical": "#d7301f",
    "quiet": "#bdbdbd",
}
LEAD_BINS: tuple[tuple[float, float, str], ...] = (
    (-1.0, 0.0, "-1–0 h"),
    (0.0, 1.0, "0–1 h"),
    (1.0, 6.0, "1–6 h"),
    (6.0, 24.0, "6–24 h"),
    (24.0, 48.0, "1–2 d"),
    (48.0, 96.0, "2–4 d"),
    (96.0, float("inf"), "> 4 d"),
)
_COLUMNS = (
    ("loans_alerted", "loans alerted"),
    ("precision", "precision"),
    ("recall_at_label", "recall @T"),
    ("recall_by_label_1h", "recall @T+1h"),
    ("lead_h_median", "lead median h"),
    ("lead_h_p10", "lead p10 h"),
    ("false_loans", "false loans"),
    ("false_loan_share", "false share"),
    ("episodes_per_1000_loan_days", "episodes /1k loan-days"),
    ("flap_share", "flapping fingerprints"),
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _table(rows: dict[str, dict[str, Any]], first: str) -> str:
    head = "".join(f"<th>{_e(label)}</th>" for _, label in _COLUMNS)
    body = "".join(
        f"<tr><td>{_e(name)}</td>"
        + "".join(f"<td>{_e(_fmt(metrics.get(key)))}</td>" for key, _ in _COLUMNS)
        + "</tr>"
        for name, metrics in rows.items()
    )
    return f"<table><thead><tr><th>{_e(first)}</th>{head}</tr></thead><tbody>{body}</tbody></table>"


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    parts = []
    for n, (name, colour) in enumerate(items):
        yy = y + 16 * n
        parts.append(
            f'<rect x="{x}" y="{yy - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{yy}">{_e(name)}</text>'
        )
    return "".join(parts)


def lead_histogram(leads_by_kind: dict[str, list[float]], title: str) -> str:
    """Stacked bars: skips per lead-time bin, one colour per skip kind."""
    kinds = sorted(leads_by_kind)
    counts = [
        [sum(1 for v in leads_by_kind[k] if lo <= v < hi) for k in kinds] for lo, hi, _ in LEAD_BINS
    ]
    top = max((sum(c) for c in counts), default=0) or 1
    width, height, left, bottom = 520, 220, 40, 30
    bar = (width - left - 10) / len(LEAD_BINS)
    parts = [f'<text x="{left}" y="14" class="title">{_e(title)}</text>']
    for i, (_, _, label) in enumerate(LEAD_BINS):
        x = left + i * bar
        y = float(height - bottom)
        for j, n in enumerate(counts[i]):
            h = (height - bottom - 24) * n / top
            if n:
                parts.append(
                    f'<rect x="{x + 3:.1f}" y="{y - h:.1f}" width="{bar - 6:.1f}" '
                    f'height="{h:.1f}" fill="{_PALETTE[j % len(_PALETTE)]}">'
                    f"<title>{_e(kinds[j])}: {n}</title></rect>"
                )
            y -= h
        total = sum(counts[i])
        parts.append(f'<text x="{x + bar / 2:.1f}" y="{y - 3:.1f}" class="c">{total}</text>')
        parts.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 14}" class="c">{_e(label)}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        'stroke="#333"/>'
    )
    legend = [(k, _PALETTE[j % len(_PALETTE)]) for j, k in enumerate(kinds)]
    parts.append(_legend(legend, width + 10, 30))
    return _svg(width + 330, max(height, 40 + 16 * len(kinds)), parts)


def volume_chart(daily: dict[str, dict[str, int]], loans: int) -> str:
    """Episodes started per day, per level, per 1,000 loans."""
    days = sorted({d for series in daily.values() for d in series})
    if not days:
        return "<p>No alert episodes.</p>"
    scale = 1000.0 / loans if loans else 1.0
    series = {level: [daily.get(level, {}).get(d, 0) * scale for d in days] for level in daily}
    top = max((max(v) for v in series.values() if v), default=0.0) or 1.0
    width, height, left, bottom = 720, 240, 50, 40
    step = (width - left - 10) / max(1, len(days) - 1)
    colours = {"critical": "#d7301f", "warning": "#e6ab02"}
    parts = [
        f'<text x="{left}" y="14" class="title">Alert episodes started per day per 1,000 loans'
        " (Asia/Shanghai days)</text>"
    ]
    for frac in (0.0, 0.5, 1.0):
        y = height - bottom - (height - bottom - 30) * frac
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="r">{top * frac:.1f}</text>'
        )
    for level, values in series.items():
        points = " ".join(
            f"{left + i * step:.1f},{height - bottom - (height - bottom - 30) * v / top:.1f}"
            for i, v in enumerate(values)
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colours.get(level, "#333")}" '
            'stroke-width="2"/>'
        )
    for i in range(0, len(days), max(1, len(days) // 8)):
        parts.append(
            f'<text x="{left + i * step:.1f}" y="{height - bottom + 16}" class="c">'
            f"{_e(days[i][5:])}</text>"
        )
    parts.append(_legend([(lv, colours.get(lv, "#333")) for lv in series], width + 10, 30))
    return _svg(width + 120, height, parts)


def confusion_chart(confusion: dict[str, dict[str, int]], skip_kinds: Sequence[str]) -> str:
    """Per kind of loan, a bar split by what the alerts did to its loans."""
    kinds = sorted(confusion, key=lambda k: (k not in skip_kinds, k))
    outcomes = [o for o in _OUTCOME_COLOURS if any(o in c for c in confusion.values())]
    width, row, left = 560, 22, 300
    parts = ['<text x="0" y="14" class="title">Loans by kind and outcome</text>']
    for i, kind in enumerate(kinds):
        y = 30 + i * row
        counts = confusion[kind]
        total = sum(counts.values()) or 1
        x = float(left)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" class="r">{_e(kind)} ({total})</text>')
        for outcome in outcomes:
            n = counts.get(outcome, 0)
            if not n:
                continue
            w = (width - left) * n / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 4}" '
                f'fill="{_OUTCOME_COLOURS[outcome]}"><title>{_e(kind)}: {n} {outcome}</title>'
                f"</rect>"
            )
            if w > 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 13}" class="cw">{n}</text>')
            x += w
    legend = [(o, _OUTCOME_COLOURS[o]) for o in outcomes]
    parts.append(_legend(legend, width + 20, 40))
    return _svg(width + 120, 40 + row * len(kinds), parts)


def _svg(width: float, height: float, parts: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}">{"".join(parts)}</svg>'
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; }
svg text { font-size: 11px; }
svg text.title { font-size: 13px; font-weight: 600; }
svg text.c { text-anchor: middle; }
svg text.cw { text-anchor: middle; fill: #fff; }
svg text.r { text-anchor: end; }
code { background: #f3f3f3; padding: 1px 4px; }
"""


def render(summary: dict[str, Any], command: str) -> str:
    """The whole report page for one run's summary (as `Run.execute` returns it)."""
    ev = summary["evaluation"]
    sections = [
        f"<h1>skipwatch evaluation</h1><p><code>{_e(command)}</code></p>",
        f"<p>{ev['loans']} loans, {ev['skips']} labelled skips, {ev['days']:.2f} days, "
        f"{summary['events']:,} events in {summary['seconds']['wall']} s "
        f"({_fmt(summary['events_per_s']['cpu'])} events per CPU second). "
        "T is a skip's <code>unreachable_at</code>; definitions in docs/evaluation/README.md."
        "</p>",
        "<h2>Confusion by kind</h2><p>Skips: <b>caught</b> (a critical firing at some moment"
        " of [T, T+1h]), <b>late</b> (a critical only after that), <b>warned</b> (warnings"
        " only), <b>missed</b>. Other loans: <b>critical</b> (a false critical), <b>warned</b>,"
        " <b>quiet</b>.</p>",
        confusion_chart(ev["confusion"], ev["skip_kinds"]),
        "<h2>Alert volume</h2>",
        volume_chart(ev["daily"], ev["loans"]),
    ]
    for level in (s.value for s in LEVELS):
        block = ev["levels"][level]
        rules = {ALL_RULES: block["overall"]}
        rules.update({k: v for k, v in block["rules"].items() if v["loans_alerted"]})
        sections += [
            f"<h2>{level.capitalize()}s</h2>",
            lead_histogram(
                ev["leads_h"][level],
                f"Lead time of skips caught by T+1h at {level} (any rule), by skip kind",
            ),
            "<h3>By rule</h3>",
            _table(rules, "rule"),
            "<h3>By kind of loan</h3>",
            _table(block["kinds"], "kind"),
        ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>skipwatch evaluation</title><style>{_STYLE}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_report(directory: Path, summary: dict[str, Any], command: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "index.html"
    page.write_text(render(summary, command), encoding="utf-8")
    return page
