"""One self-contained HTML page with every claim: summary, figures (inline SVG), numbers, provenance.

The page says what kind of evidence each verdict is (:mod:`implicitlab.experiments.claims`): per
experiment, the paper's **predictions** (each with its negative control — setting, measured value,
verdict — or the reason it has none), the **consistency checks** (identities: checks of our code,
not evidence for the paper) and our **observations**, in separate tables, then the experiment's
**threshold table** (every number a verdict depends on, with its source). A prediction whose control
holds too is flagged *uninformative* (amber) — it could not have failed — and is counted apart in
the headline, which counts predictions (:func:`implicitlab.experiments.claims.headline`). A claim
without data keeps its row with the reason.

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

from ..experiments.claims import KINDS, VERDICTS, count, headline

CSS = """
:root { --ok: #17663a; --ok-bg: #e6f4ea; --bad: #a50e0e; --bad-bg: #fce8e6; --un: #8a4b00; --un-bg: #ffe8c2;
        --na: #4b5563; --na-bg: #eceff3; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink);
       max-width: 1180px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 40px 0 6px; border-top: 1px solid var(--line);
     padding-top: 20px; } h3 { font-size: 15px; margin: 18px 0 6px; }
h3 .muted { font-weight: 400; font-size: 13px; }
.muted { color: var(--muted); } code { font-size: 13px; background: #f3f4f6; padding: 1px 4px; border-radius: 4px; }
.headline { font-size: 18px; font-weight: 600; margin: 10px 0; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 12px; font-size: 13.5px; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums;
     white-space: nowrap; }
.verdict { font-weight: 700; padding: 2px 8px; border-radius: 10px; white-space: nowrap; }
.holds { color: var(--ok); background: var(--ok-bg); } .refuted { color: var(--bad); background: var(--bad-bg); }
.uninformative { color: var(--un); background: var(--un-bg); } .nodata { color: var(--na); background: var(--na-bg); }
tr.refuted td { background: var(--bad-bg); } tr.refuted td.claim { color: var(--bad); font-weight: 600; }
tr.uninformative td { background: var(--un-bg); } tr.uninformative td.claim { color: var(--un); font-weight: 600; }
tr.nodata td.claim { color: var(--na); }
.ctl { font-weight: 600; padding: 1px 6px; border-radius: 8px; border: 1px solid var(--line); white-space: nowrap; }
.ctl.refuted { background: none; color: var(--ok); border-color: var(--ok); }
.ctl.holds { background: var(--un-bg); color: var(--un); border-color: var(--un); }
.ctl.nodata { background: none; color: var(--na); }
.missing { color: var(--bad); font-style: italic; }
.reason { font-size: 12.5px; color: var(--muted); margin-top: 3px; }
.figure { overflow-x: auto; margin: 8px 0; border: 1px solid var(--line); border-radius: 6px; padding: 6px; }
.figure svg { max-width: 100%; height: auto; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 170px; }
.card b { font-size: 22px; } details { margin: 6px 0; } summary { cursor: pointer; color: var(--muted); }
pre { background: #f6f8fa; padding: 8px; border-radius: 6px; overflow-x: auto; font-size: 12px; }
.basis { color: var(--muted); font-size: 12.5px; font-weight: 400; }
@media print { body { max-width: none; padding: 0; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2 { page-break-before: always; } .figure { border: none; }
  tr { page-break-inside: avoid; } details { display: block; } details > * { display: block; } }
"""

SECTIONS = {
    "prediction": ("Predictions", "statements of the paper the data could contradict; each with its negative "
                   "control — the same measurement and rule where the statement should not hold"),
    "identity": ("Consistency checks", "identities that follow from the setup: checks of our implementation, "
                 "not evidence for the paper"),
    "observation": ("Observations", "our own description of what we measured, not a statement of the paper"),
}


@dataclass
class ReportEntry:
    """What the report shows of one experiment run.

    ``thresholds``: the experiment's threshold table, ``{name: {"value": …, "source": …}}``
    (:func:`thresholds_table` of ``Experiment.thresholds``). ``error``: why the run failed, when it did
    (its claims are then one placeholder without data).
    """

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
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str = ""


def thresholds_table(thresholds: dict) -> dict[str, dict[str, Any]]:
    """``Experiment.thresholds`` ({name: Threshold}) as plain data: ``{name: {"value", "source"}}``."""
    out = {}
    for name, t in thresholds.items():
        value, source = (t["value"], t["source"]) if isinstance(t, dict) else (t.value, t.source)
        out[str(name)] = {"value": value, "source": source}
    return out


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, str):
        return _esc(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    if v != v:
        return "NaN"
    return f"{v:.4g}"


def _verdict_class(verdict: str) -> str:
    return {"holds": "holds", "refuted": "refuted", "uninformative": "uninformative"}.get(verdict, "nodata")


def _badge(verdict: str) -> str:
    return f"<span class='verdict {_verdict_class(verdict)}'>{_esc(verdict)}</span>"


def _svg_inline(svg: str, idx: int) -> str:
    """Strip the XML prolog/doctype and make element ids unique per figure (several SVGs in one page)."""
    svg = re.sub(r"<\?xml[^>]*\?>", "", svg)
    svg = re.sub(r"<!DOCTYPE[^>]*>", "", svg, flags=re.S)
    svg = re.sub(r'id="([^"]+)"', lambda m: f'id="f{idx}-{m.group(1)}"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', lambda m: f"url(#f{idx}-{m.group(1)})", svg)
    svg = re.sub(r'xlink:href="#([^"]+)"', lambda m: f'xlink:href="#f{idx}-{m.group(1)}"', svg)
    svg = re.sub(r'(?<!:)href="#([^"]+)"', lambda m: f'href="#f{idx}-{m.group(1)}"', svg)
    return svg.strip()


def summary_counts(entries: list[ReportEntry]) -> dict[str, dict[str, dict[str, int]]]:
    """Per paper, per kind: how many claims hold, are refuted, are uninformative or have no data
    (:func:`implicitlab.experiments.claims.count`)."""
    by_paper: dict[str, list[dict]] = {}
    for e in entries:
        by_paper.setdefault(e.paper, []).extend(e.claims)
    return {paper: count(claims) for paper, claims in by_paper.items()}


def _kind(c: dict) -> str:
    return c.get("kind", "prediction")


def _seeds_rule(c: dict) -> str:
    seeds = c.get("seeds", 1)
    rule = c.get("rule") or ""
    return f"{_esc(seeds)}<div class='reason'>{_esc(rule)}</div>" if rule else _esc(seeds)


def _control_cell(c: dict) -> str:
    ctl = c.get("control")
    if ctl:
        verdict = ctl.get("verdict") or "no data"
        cls, said = {"refuted": ("refuted", "refuted there"), "holds": ("holds", "holds there too")}.get(
            verdict, ("nodata", "no data"))
        note = f"<div class='reason'>{_esc(ctl['note'])}</div>" if ctl.get("note") else ""
        return (f"<div>{_esc(ctl.get('setting', ''))}</div><div>measured {_fmt(ctl.get('measured'))} · "
                f"<span class='ctl {cls}'>{said}</span></div>{note}")
    reason = c.get("control_reason") or "no control stated"
    if reason == "no control stated":
        return "<span class='missing'>no control stated</span>"
    return f"<span class='muted'>no control: {_esc(reason)}</span>"


def _verdict_cell(c: dict) -> str:
    cell = _badge(c["verdict"])
    if c["verdict"] == "no data":
        cell += f"<div class='reason'>{_esc(c.get('no_data_reason') or 'the measured value is not a number')}</div>"
    elif c["verdict"] == "uninformative":
        cell += "<div class='reason'>its control holds too: it could not have failed here</div>"
    return cell


def _claims_table(kind: str, claims: list[dict]) -> list[str]:
    title, what = SECTIONS[kind]
    says = "we observe" if kind == "observation" else "the paper says"
    parts = [f"<h3 class='section {kind}'>{title} <span class='muted'>— {what}</span></h3>",
             f"<table class='claims {kind}'><tr><th>claim</th><th>{says}</th><th>source</th><th>measured</th><th>bound</th><th>seeds · rule</th>"
             + ("<th>control</th>" if kind == "prediction" else "") + "<th>verdict</th></tr>"]
    for c in claims:
        cls = _verdict_class(c["verdict"])
        parts.append(
            f"<tr class='{cls}'><td class='claim'>{_esc(c['name'])}<div class='basis'>{_esc(c.get('basis', ''))}"
            f"</div></td><td>{_esc(c['statement'])}</td><td>{_esc(c['source'])}</td>"
            f"<td class='num'>{_fmt(c['measured'])}</td><td class='num'>{_esc(c['relation'])} {_fmt(c['bound'])}</td>"
            f"<td class='num'>{_seeds_rule(c)}</td>"
            + (f"<td class='control'>{_control_cell(c)}</td>" if kind == "prediction" else "")
            + f"<td>{_verdict_cell(c)}</td></tr>"
        )
    parts.append("</table>")
    return parts


def _thresholds_table(thresholds: dict[str, dict[str, Any]]) -> list[str]:
    parts = ["<h3 class='section thresholds'>Thresholds <span class='muted'>— every number a verdict depends on, "
             "with its source</span></h3>"]
    if not thresholds:
        return parts + ["<p class='muted'>No threshold table declared.</p>"]
    parts.append("<table class='thresholds'><tr><th>threshold</th><th>value</th><th>source</th></tr>")
    for name, t in thresholds.items():
        parts.append(f"<tr><td>{_esc(name)}</td><td class='num'>{_fmt(t.get('value'))}</td>"
                     f"<td>{_esc(t.get('source', ''))}</td></tr>")
    parts.append("</table>")
    return parts


def _kind_summary(n: dict[str, dict[str, int]]) -> str:
    """'3 hold · 1 refuted · …' for one kind's counts (only the non-zero verdicts)."""
    words = {"holds": "hold", "refuted": "refuted", "uninformative": "uninformative", "no data": "no data"}
    shown = [f"<span class='verdict {_verdict_class(v)}'>{n[v]} {words[v]}</span>" for v in VERDICTS if n[v]]
    return " ".join(shown) if shown else "<span class='muted'>—</span>"


def render(entries: list[ReportEntry], *, title: str = "implicitlab — do the claims hold?") -> str:
    """The whole page as a string."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    everything = [c for e in entries for c in e.claims]
    total = count(everything)
    p, ids, obs = total["prediction"], total["identity"], total["observation"]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="muted">{len(entries)} experiments · generated {now} · every number below is measured; '
        "each threshold says where it comes from.</p>",
        f"<p class='headline' id='headline'>{_esc(headline(everything))}</p>",
        "<p class='muted'>Only predictions are evidence for the papers. A prediction is <em>uninformative</em> "
        "when its negative control — the same measurement and rule in a setting where it should not hold — "
        "holds too. Consistency checks test our implementation; observations are ours.</p>",
        '<div class="cards">',
        f'<div class="card">{_badge("holds")}<br><b>{p["holds"]}</b> predictions</div>',
        f'<div class="card">{_badge("refuted")}<br><b>{p["refuted"]}</b> predictions</div>',
        f'<div class="card">{_badge("uninformative")}<br><b>{p["uninformative"]}</b> predictions</div>',
        f'<div class="card">{_badge("no data")}<br><b>{p["no data"]}</b> predictions</div>',
        f'<div class="card">consistency checks<br><b>{ids["holds"]}</b> of {sum(ids.values())} hold</div>',
        f'<div class="card">observations<br><b>{obs["holds"] + obs["uninformative"]}</b> of {sum(obs.values())} '
        "hold</div>",
        "</div>",
    ]
    flagged = [(e, c) for e in entries for c in e.claims
               if _kind(c) == "prediction" and c["verdict"] in ("refuted", "uninformative", "no data")]
    flagged += [(e, c) for e in entries for c in e.claims if _kind(c) == "identity" and c["verdict"] != "holds"]
    if flagged:
        parts.append("<h3>Predictions that are not evidence here, and consistency checks that fail</h3>"
                     "<table class='flagged'><tr><th>experiment</th><th>kind</th><th>claim</th><th>verdict</th></tr>")
        for e, c in flagged:
            parts.append(f"<tr class='{_verdict_class(c['verdict'])}'><td><a href='#{_esc(e.experiment)}'>"
                         f"{_esc(e.experiment)}</a></td><td>{_esc(_kind(c))}</td><td class='claim'>{_esc(c['name'])}"
                         f"</td><td>{_verdict_cell(c)}</td></tr>")
        parts.append("</table>")
    parts.append("<h3>Per paper</h3><table class='papers'><tr><th>paper</th><th>predictions</th>"
                 "<th>consistency checks</th><th>observations</th></tr>")
    for paper, n in summary_counts(entries).items():
        parts.append(f"<tr><td>{_esc(paper)}</td>" + "".join(f"<td>{_kind_summary(n[k])}</td>" for k in KINDS)
                     + "</tr>")
    parts.append("</table>")
    parts.append("<h3>Experiments</h3><table class='experiments'><tr><th>experiment</th><th>what</th>"
                 "<th>predictions</th><th>consistency checks</th><th>observations</th><th>wall time</th></tr>")
    for e in entries:
        n = count(e.claims)
        parts.append(f"<tr><td><a href='#{_esc(e.experiment)}'>{_esc(e.experiment)}</a></td><td>{_esc(e.title)}</td>"
                     + "".join(f"<td>{_kind_summary(n[k])}</td>" for k in KINDS)
                     + f"<td class='num'>{e.wall_time_s:.1f} s</td></tr>")
    parts.append("</table>")

    for idx, e in enumerate(entries):
        parts.append(f"<h2 id='{_esc(e.experiment)}'>{_esc(e.experiment)} "
                     f"<span class='muted' style='font-weight:400'>— {_esc(e.paper)}</span></h2>")
        parts.append(f"<p>{_esc(e.title)}</p>")
        preset = f"preset <code>{_esc(e.preset)}</code>" if e.preset else "custom config"
        reused = " · reused from the store" if e.reused else ""
        parts.append(f"<p class='muted'>{preset} · wall time {e.wall_time_s:.1f} s{reused}</p>")
        if e.error:
            parts.append(f"<p class='refuted'>The run failed: {_esc(e.error)}</p>")
        if e.stale:
            commit = _esc(str(e.environment.get("git_commit") or "unknown")[:12])
            parts.append("<p class='refuted'>This run was made by other code than the current (stored code "
                         f"fingerprint {_esc(e.environment.get('code_fingerprint', 'none'))}, commit {commit}): "
                         "its table may not be what the current code computes. Rerun with "
                         "<code>implicitlab check --fresh</code>.</p>")
        parts.append(f"<div class='figure' role='img' aria-label='figure of {_esc(e.experiment)}'>"
                     f"{_svg_inline(e.figure_svg, idx)}</div>")
        for kind in KINDS:
            of_kind = [c for c in e.claims if _kind(c) == kind]
            if of_kind:
                parts += _claims_table(kind, of_kind)
        parts += _thresholds_table(e.thresholds)
        if e.description:
            parts.append(f"<details><summary>what this experiment does</summary><pre>{_esc(e.description.strip())}"
                         "</pre></details>")
        parts.append(f"<details><summary>config</summary><pre>{_esc(json.dumps(e.config, indent=2))}</pre></details>")
        parts.append(f"<details><summary>environment</summary><pre>{_esc(json.dumps(e.environment, indent=2))}"
                     "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def claims_records(entries: list[ReportEntry]) -> list[dict]:
    """What ``claims.json`` holds: per experiment, its claims (kind, verdict, measured, bound, seeds,
    rule, control or control_reason, …: :meth:`Claim.to_dict`), its counts per kind and its thresholds."""
    return [{"experiment": e.experiment, "paper": e.paper, "preset": e.preset, "wall_time_s": e.wall_time_s,
             **({"error": e.error} if e.error else {}),
             "counts": count(e.claims), "thresholds": e.thresholds, "claims": e.claims} for e in entries]


def write_report(entries: list[ReportEntry], out_dir: Path, *, title: str | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``claims.json`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "report.html"
    page.write_text(render(entries, **({"title": title} if title else {})), encoding="utf-8")
    claims = out_dir / "claims.json"
    claims.write_text(json.dumps(claims_records(entries), indent=2, default=str))
    return page, claims
