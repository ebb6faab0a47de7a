"""Per-cycle report: CYCLE_DIR/report.json (the cycle's result, whole) and report.md (for people)."""
from __future__ import annotations

import json
from pathlib import Path


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


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
    if result.get("train"):
        lines += ["## Training", "", ", ".join(f"{k}: {_fmt(v)}" for k, v in result["train"].items()), ""]
    gate = result.get("gate")
    if gate:
        lines += ["## Gate", "", f"- verdict: **{'promote' if gate.get('promote') else 'reject'}**",
                  f"- reasons: {'; '.join(gate.get('reasons', []))}"]
        if gate.get("win_rate") is not None:
            lines.append(f"- held-out pairwise: win rate {gate['win_rate']:.2f} "
                         f"({gate.get('wins')} wins, {gate.get('losses')} losses, {gate.get('ties')} ties)")
        for name, rates in (gate.get("verifier_pass") or {}).items():
            lines.append(f"- {name} verifier pass rate: {_fmt(rates.get('current'))} -> {_fmt(rates.get('candidate'))}")
        if gate.get("canary"):
            lines.append("- canary: " + ", ".join(f"{k} {_fmt(v)}" for k, v in gate["canary"].items()))
        for ex in gate.get("examples", [])[:3]:
            lines += ["", f"<details><summary>{ex['prompt_id']}: {ex['verdict']}</summary>", "",
                      f"current ({_fmt(ex.get('score_current'))}): `{ex['current'][:300]}`", "",
                      f"candidate ({_fmt(ex.get('score_candidate'))}): `{ex['candidate'][:300]}`", "", "</details>"]
        lines.append("")
    if result.get("timings"):
        lines += ["## Time (s)", "", " | ".join(f"{k} {v}" for k, v in result["timings"].items()), ""]
    return "\n".join(lines)


def write_report(cycle_dir: Path, result: dict) -> None:
    (cycle_dir / "report.json").write_text(json.dumps(result, indent=2, default=str))
    (cycle_dir / "report.md").write_text(render_markdown(result))
