"""Per-cycle report: CYCLE_DIR/report.json (the cycle's result, whole) and report.md (for people)."""
from __future__ import annotations

import json
from pathlib import Path

from trainer.stats import Interval


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def _interval(d: dict | None, points: bool = False) -> str:
    return Interval(**d).text(points) if d else "n/a"


def render_markdown(result: dict) -> str:
    lines = [f"# TAO cycle {result.get('cycle_id')}", "",
             f"- status: **{result.get('status')}**" + (f": {result['reason']}" if result.get("reason") else ""),
             f"- version: {result.get('version') or '-'} (parent {result.get('parent') or '-'})",
             f"- watermark: {result.get('watermark') or '-'}", ""]
    if result.get("counts"):
        lines += ["## Data", "", "| what | count |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in result["counts"].items()]
        lines.append("")
    if result.get("select"):
        sel = {k: v for k, v in result["select"].items() if not isinstance(v, dict)}
        lines += ["## Select", "", ", ".join(f"{k}: {v}" for k, v in sel.items()), ""]
    if result.get("reward"):
        lines += ["## Reward", "", ", ".join(f"{k}: {_fmt(v)}" for k, v in result["reward"].items()), ""]
    if result.get("opinions"):
        lines += ["## Reward sources", "", "prompts judged per source (of "
                  f"{(result.get('counts') or {}).get('prompts', '?')}): "
                  + ", ".join(f"{k} {v}" for k, v in result["opinions"].items()), ""]
    fit = result.get("function_fit") or {}
    if fit.get("prompts") and "clear_favourite" in fit:  # absent: the source is off (weight 0)
        lines += [f"Function fit: {fit['clear_favourite']} of {fit['prompts']} prompts offering a choice of "
                  f"tools had a clear favourite (margin {fit.get('margin', '?')} nats).", ""]
    elif fit.get("error"):
        lines += [f"Function fit: skipped this cycle ({fit['error']}).", ""]
    if result.get("train"):
        lines += ["## Training", "", ", ".join(f"{k}: {_fmt(v)}" for k, v in result["train"].items()), ""]
    gate = result.get("gate")
    if gate:
        lines += ["## Gate", "", f"- verdict: **{'promote' if gate.get('promote') else 'reject'}**",
                  f"- reasons: {'; '.join(gate.get('reasons', []))}"]
        win = gate.get("win_interval") or {}
        if win.get("value") is not None:
            lines.append(f"- held-out win rate (ties are not half wins): {_interval(win)} "
                         f"({gate.get('wins')} wins, {gate.get('losses')} losses, {gate.get('ties')} ties)")
        elif gate.get("ties"):
            lines.append(f"- held-out: {gate['ties']} ties, nothing told the models apart")
        for name, rates in (gate.get("verifier_pass") or {}).items():
            lines.append(f"- {name} verifier pass rate: {_fmt(rates.get('current'))} -> {_fmt(rates.get('candidate'))}"
                         + (f" (n={rates['n']})" if rates.get("n") is not None else ""))
        probes = gate.get("probes") or {}
        if probes:
            rate = probes.get("pass_rate") or {}
            lines += [f"- probe suite ({probes.get('checked')} checked of {probes.get('n')}): pass rate base "
                      f"{_fmt(rate.get('base'))}, parent {_fmt(rate.get('parent'))}, candidate {_fmt(rate.get('candidate'))}",
                      f"  - candidate - parent: {_interval(probes.get('vs_parent'), points=True)} points",
                      f"  - candidate - base: {_interval(probes.get('vs_base'), points=True)} points"]
            agree = probes.get("agreement") or {}
            if agree.get("n"):
                lines.append(f"  - short answers agreeing (n={agree['n']}): with the parent {_fmt(agree.get('parent'))}, "
                             f"with the base {_fmt(agree.get('base'))}")
            if probes.get("drift"):
                lines.append(f"  - drift, log-prob per token of the parent's answers under the candidate: "
                             f"{_interval(probes['drift'])}")
            # Each kind's differences carry intervals at the Bonferroni-corrected confidence
            # (trainer/gate.py); reports written before they existed show n/a.
            lines += ["", "| probe kind | n | base | parent | candidate | candidate - parent (points) | "
                      "candidate - base (points) |", "|---|---|---|---|---|---|---|"]
            lines += [f"| {k} | {v.get('n')} | {_fmt(v.get('base'))} | {_fmt(v.get('parent'))} | "
                      f"{_fmt(v.get('candidate'))} | {_interval(v.get('vs_parent'), points=True)} | "
                      f"{_interval(v.get('vs_base'), points=True)} |" for k, v in (probes.get("by_kind") or {}).items()]
        for ex in gate.get("examples", [])[:3]:
            k = ex.get("samples", 1)
            how = f"mean score of {k} samples, the first shown" if k > 1 else "score"
            lines += ["", f"<details><summary>{ex['prompt_id']}: {ex['verdict']}</summary>", "",
                      f"current ({how} {_fmt(ex.get('score_current'))}): `{ex['current'][:300]}`", "",
                      f"candidate ({how} {_fmt(ex.get('score_candidate'))}): `{ex['candidate'][:300]}`", "",
                      "</details>"]
        lines.append("")
    if result.get("timings"):
        lines += ["## Time (s)", "", " | ".join(f"{k} {v}" for k, v in result["timings"].items()), ""]
    return "\n".join(lines)


def write_report(cycle_dir: Path, result: dict) -> None:
    (cycle_dir / "report.json").write_text(json.dumps(result, indent=2, default=str))
    (cycle_dir / "report.md").write_text(render_markdown(result))
