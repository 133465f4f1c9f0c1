"""One self-contained HTML page with every claim: summary, figures (inline SVG), numbers, provenance.

No network: styles are inline, figures are the experiments' own SVGs embedded in the page, and
nothing is loaded from elsewhere. The page reads on a laptop screen and prints to PDF (each
experiment starts on a new page when printed).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

CSS = """
:root { --ok: #17663a; --ok-bg: #e6f4ea; --bad: #a50e0e; --bad-bg: #fce8e6; --na: #7a5b00; --na-bg: #fef7e0;
        --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink);
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 40px 0 6px; border-top: 1px solid var(--line);
     padding-top: 20px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); } code { font-size: 13px; background: #f3f4f6; padding: 1px 4px; border-radius: 4px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 12px; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums;
     white-space: nowrap; }
.verdict { font-weight: 700; padding: 2px 8px; border-radius: 10px; white-space: nowrap; }
.holds { color: var(--ok); background: var(--ok-bg); } .refuted { color: var(--bad); background: var(--bad-bg); }
.nodata { color: var(--na); background: var(--na-bg); }
tr.refuted td { background: var(--bad-bg); } tr.refuted td.claim { color: var(--bad); font-weight: 600; }
.figure { overflow-x: auto; margin: 8px 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
.figure svg { max-width: 100%; height: auto; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 220px; }
.card b { font-size: 22px; } details { margin: 6px 0; } summary { cursor: pointer; color: var(--muted); }
pre { background: #f6f8fa; padding: 8px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
.basis { color: var(--muted); font-size: 12.5px; }
@media print { body { max-width: none; padding: 0; } h2 { page-break-before: always; } .figure { border: none; }
  details { display: block; } details > * { display: block; } }
"""


@dataclass
class ReportEntry:
    """What the report shows of one experiment run."""

    experiment: str
    title: str
    paper: str
    preset: str | None
    claims: list[dict]
    figure_svg: str
    config: dict[str, Any]
    environment: dict[str, Any]
    wall_time_s: float
    description: str = ""
    reused: bool = False
    stale: bool = False  # reused, but made by other code than the current (see ``check --fresh``)
    extra: dict[str, Any] = field(default_factory=dict)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if v != v:
        return "NaN"
    return f"{v:.4g}"


def _verdict_class(verdict: str) -> str:
    return {"holds": "holds", "refuted": "refuted"}.get(verdict, "nodata")


def _svg_inline(svg: str, idx: int) -> str:
    """Strip the XML prolog/doctype and make element ids unique per figure (several SVGs in one page)."""
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="f{idx}-{m.group(1)}"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#f{idx}-{m.group(1)})", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#f{idx}-{m.group(1)}"', svg)
    svg = re.sub(r'(?<!:)href="#([^"]+)"', lambda m: f'href="#f{idx}-{m.group(1)}"', svg)
    return svg.strip()


def summary_counts(entries: list[ReportEntry]) -> dict[str, dict[str, int]]:
    """Per paper: how many claims hold, are refuted, or have no data."""
    out: dict[str, dict[str, int]] = {}
    for e in entries:
        row = out.setdefault(e.paper, {"holds": 0, "refuted": 0, "no data": 0})
        for c in e.claims:
            row[c["verdict"] if c["verdict"] in row else "no data"] += 1
    return out


def render(entries: list[ReportEntry], *, title: str = "implicitlab — do the claims hold?") -> str:
    """The whole page as a string."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total = {"holds": 0, "refuted": 0, "no data": 0}
    for counts in summary_counts(entries).values():
        for k, v in counts.items():
            total[k] += v
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">{len(entries)} experiments · generated {now} · every number below is measured; '
        "each threshold says where it comes from.</p>",
        '<div class="cards">',
        f'<div class="card"><span class="verdict holds">holds</span><br><b>{total["holds"]}</b> claims</div>',
        f'<div class="card"><span class="verdict refuted">refuted</span><br><b>{total["refuted"]}</b> claims</div>',
        f'<div class="card"><span class="verdict nodata">no data</span><br><b>{total["no data"]}</b> claims</div>',
        "</div>",
        "<h3>Per paper</h3><table><tr><th>paper</th><th>holds</th><th>refuted</th><th>no data</th></tr>",
    ]
    for paper, counts in summary_counts(entries).items():
        parts.append(f"<tr><td>{_esc(paper)}</td><td class='num'>{counts['holds']}</td>"
                     f"<td class='num'>{counts['refuted']}</td><td class='num'>{counts['no data']}</td></tr>")
    parts.append("</table>")
    parts.append("<h3>Experiments</h3><table><tr><th>experiment</th><th>what</th><th>claims</th><th>wall time</th></tr>")
    for e in entries:
        bad = sum(c["verdict"] != "holds" for c in e.claims)
        status = (f"<span class='verdict refuted'>{bad} not holding</span>" if bad
                  else "<span class='verdict holds'>all hold</span>")
        parts.append(f"<tr><td><a href='#{_esc(e.experiment)}'>{_esc(e.experiment)}</a></td><td>{_esc(e.title)}</td>"
                     f"<td>{len(e.claims)} · {status}</td><td class='num'>{e.wall_time_s:.1f} s</td></tr>")
    parts.append("</table>")

    for idx, e in enumerate(entries):
        parts.append(f"<h2 id='{_esc(e.experiment)}'>{_esc(e.experiment)} "
                     f"<span class='muted' style='font-weight:400'>— {_esc(e.paper)}</span></h2>")
        parts.append(f"<p>{_esc(e.title)}</p>")
        preset = f"preset <code>{_esc(e.preset)}</code>" if e.preset else "custom config"
        reused = " · reused from the store" if e.reused else ""
        parts.append(f"<p class='muted'>{preset} · wall time {e.wall_time_s:.1f} s{reused}</p>")
        if e.stale:
            commit = _esc(str(e.environment.get("git_commit") or "unknown")[:12])
            parts.append("<p class='refuted'>This run was made by other code than the current (stored code "
                         f"fingerprint {_esc(e.environment.get('code_fingerprint', 'none'))}, commit {commit}): "
                         "its table may not be what the current code computes. Rerun with "
                         "<code>implicitlab check --fresh</code>.</p>")
        parts.append(f"<div class='figure' role='img' aria-label='figure of {_esc(e.experiment)}'>"
                     f"{_svg_inline(e.figure_svg, idx)}</div>")
        parts.append("<table><tr><th>claim</th><th>the paper says</th><th>source</th><th>measured</th>"
                     "<th>bound</th><th>verdict</th></tr>")
        for c in e.claims:
            cls = _verdict_class(c["verdict"])
            parts.append(
                f"<tr class='{cls}'><td class='claim'>{_esc(c['name'])}<div class='basis'>{_esc(c.get('basis', ''))}"
                f"</div></td><td>{_esc(c['statement'])}</td><td>{_esc(c['source'])}</td>"
                f"<td class='num'>{_fmt(c['measured'])}</td><td class='num'>{_esc(c['relation'])} {_fmt(c['bound'])}</td>"
                f"<td><span class='verdict {cls}'>{_esc(c['verdict'])}</span></td></tr>"
            )
        parts.append("</table>")
        if e.description:
            parts.append(f"<details><summary>what this experiment does</summary><pre>{_esc(e.description.strip())}"
                         "</pre></details>")
        parts.append(f"<details><summary>config</summary><pre>{_esc(json.dumps(e.config, indent=2))}</pre></details>")
        parts.append(f"<details><summary>environment</summary><pre>{_esc(json.dumps(e.environment, indent=2))}"
                     "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(entries: list[ReportEntry], out_dir: Path, *, title: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``claims.json`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "report.html"
    page.write_text(render(entries, **({"title": title} if title else {})), encoding="utf-8")
    claims = out_dir / "claims.json"
    claims.write_text(json.dumps(
        [{"experiment": e.experiment, "paper": e.paper, "preset": e.preset, "wall_time_s": e.wall_time_s,
          "claims": e.claims} for e in entries], indent=2))
    return page, claims
