"""How fast the gate's evaluation engine answers the probe suite (issue "faster cycles"):
trainer/generate.py `Engine` (its own decoding loop: each prompt's prefill once, rows leaving
the batch as they end) against transformers' `generate` (what the engine used before, kept
here as the reference), side by side in one run, on the same probes, model, dtype and batch
size. Reported: seconds, answer tokens a second, and the ratio; each arm's answers are also
checked to be the same kind of thing (greedy answers equal; sampled answer lengths alike).

    python -m tests.bench.gate_sampling            # or make bench-gate-sampling
    python -m tests.bench.gate_sampling --candidate DIR   # and the coupling of two models' draws

With `--candidate` (a trained model, e.g. test_gate_models' good candidate) it also measures
how tightly the engine's draws couple the base and that candidate, for the Gumbel-max draw the
gate uses and the inverse-CDF draw it replaced: the share of identical answers (same probe,
same sample) and the width of the gate's paired interval over the whole suite.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from tests.models import BASE_MODEL

RESULTS = Path(__file__).parent / "results"


def reference(engine, conversations: list[list[dict]], *, samples: int, temperature: float,
              max_new_tokens: int, seed: int) -> list[list[str]]:
    """transformers' generate, batch by batch as the engine batches (samples 0: greedy)."""
    import torch

    tok, model = engine._load()
    out: list[list[str]] = []
    with torch.inference_mode():
        for i, enc in engine._batches(conversations, "reference", engine.batch_size if samples else engine.greedy_batch,
                                      samples or 1, max_new_tokens):
            torch.manual_seed(seed + i)
            extra = (dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples)
                     if samples else dict(do_sample=False))
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **extra)
            texts = [t.strip() for t in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
            k = samples or 1
            out += [texts[j : j + k] for j in range(0, len(texts), k)]
    return out


def measure(model_dir: Path, dtype: str, probes: int, samples: int, max_new_tokens: int, temperature: float) -> dict:
    from trainer.generate import Engine
    from trainer.probes import load_probes

    conversations = [p.messages for p in load_probes()[:probes]]
    engine = Engine(model_dir, dtype=dtype, log=lambda _: None)
    tok, _ = engine._load()
    engine.sample(conversations[:2], samples=2, temperature=temperature, max_new_tokens=4)  # warm both paths
    arms: dict = {}
    for mode, k in (("greedy", 0), ("sampled", samples)):
        for arm in ("transformers_generate", "engine"):
            t = time.perf_counter()
            if arm == "engine":
                answers = ([[a] for a in engine.generate(conversations, max_new_tokens=max_new_tokens)] if not k else
                           engine.sample(conversations, samples=k, temperature=temperature,
                                         max_new_tokens=max_new_tokens, seed=0))
            else:
                answers = reference(engine, conversations, samples=k, temperature=temperature,
                                    max_new_tokens=max_new_tokens, seed=0)
            seconds = time.perf_counter() - t
            tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for row in answers for a in row)
            arms[f"{mode}/{arm}"] = {"seconds": round(seconds, 2), "answers": sum(map(len, answers)),
                                     "answer_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
                                     "_answers": answers}
        ref, new = arms[f"{mode}/transformers_generate"], arms[f"{mode}/engine"]
        ref["ratio"] = new["ratio"] = round(ref["seconds"] / new["seconds"], 2)
        if not k:
            new["same_as_reference"] = sum(a == b for a, b in zip(ref["_answers"], new["_answers"]))
    for a in arms.values():
        a.pop("_answers")
    return {"probes": len(conversations), "samples": samples, "max_new_tokens": max_new_tokens,
            "temperature": temperature, "arms": arms}


def coupling(base: Path, candidate: Path, dtype: str, samples: int, max_new_tokens: int,
             temperature: float) -> dict:
    """Both draws, base and candidate, over the whole probe suite: identical answers and the
    gate's vs-parent interval (the base as the parent), side by side in one run."""
    from trainer import generate
    from trainer.gate import ProbeAnswers, probe_figures
    from trainer.probes import load_probes

    probes = load_probes()
    conversations = [p.messages for p in probes]
    engines = {who: generate.Engine(d, dtype=dtype, log=lambda _: None) for who, d in (("base", base),
                                                                                       ("candidate", candidate))}
    out = {}
    for name, pick in (("gumbel_max", generate._gumbel_pick), ("inverse_cdf", generate._icdf_pick)):
        answers, seconds = {}, 0.0
        for who, engine in engines.items():
            engine.pick = pick
            t = time.perf_counter()
            answers[who] = engine.sample(conversations, samples=samples, temperature=temperature,
                                         max_new_tokens=max_new_tokens, seed=0)
            seconds += time.perf_counter() - t
        same = sum(a == b for x, y in zip(answers["base"], answers["candidate"]) for a, b in zip(x, y))
        figures = probe_figures(probes, ProbeAnswers(base=answers["base"], parent=answers["base"],
                                                     candidate=answers["candidate"]), confidence=0.95)
        iv = figures["vs_parent"]
        out[name] = {"seconds": round(seconds, 1), "identical": round(same / (len(probes) * samples), 4),
                     "vs_parent": iv, "width_points": round(100 * (iv["high"] - iv["low"]), 2)}
    return {"candidate": str(candidate), "probes": len(probes), "samples": samples, "draws": out}


def coupling_report(c: dict) -> list[str]:
    lines = ["", "## Coupling: the base and a candidate drawing with the same keys", "",
             f"Candidate `{c['candidate']}`; all {c['probes']} probes, {c['samples']} samples each; the gate's "
             "paired interval (95%) of the candidate against the base as its parent. Seconds: both models.", "",
             "| draw | identical answers | candidate - parent (points) | interval width (points) | seconds |",
             "|---|---|---|---|---|"]
    for name, d in c["draws"].items():
        iv = d["vs_parent"]
        lines.append(f"| {name} | {100 * d['identical']:.1f}% | {100 * iv['value']:+.1f} [{100 * iv['low']:+.1f}, "
                     f"{100 * iv['high']:+.1f}] | {d['width_points']} | {d['seconds']} |")
    return lines


def report(result: dict, command: str, model_dir: Path, dtype: str, flags: str, cores: int | None) -> str:
    lines = ["# Gate sampling benchmark", "", f"Command: `{command}`", "",
             f"Machine: {platform.machine()}, {cores} cores, CPU flags: {flags or 'no AVX-512, no AMX'}; model "
             f"{model_dir.name} in {dtype}.", "",
             f"The first {result['probes']} probes of the gate's suite, greedy and {result['samples']} samples each at "
             f"temperature {result['temperature']:g}, at most {result['max_new_tokens']} new tokens (the gate's "
             "settings), one arm after the other in one process. Ratio: transformers' seconds over the engine's.", "",
             "| mode | arm | seconds | answers | answer tokens | tokens/s | ratio |", "|---|---|---|---|---|---|---|"]
    for name, a in result["arms"].items():
        mode, arm = name.split("/")
        lines.append(f"| {mode} | {arm} | {a['seconds']} | {a['answers']} | {a['answer_tokens']} | "
                     f"{a['tokens_per_s']} | {a['ratio']:.2f}x |")
    same = result["arms"]["greedy/engine"].get("same_as_reference")
    lines += ["", f"Greedy answers equal to transformers': {same}/{result['probes']}."]
    if result.get("coupling"):
        lines += coupling_report(result["coupling"])
    return "\n".join(lines + [""])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=BASE_MODEL, help="model directory (default: the base model)")
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: what this CPU does well)")
    ap.add_argument("--probes", type=int, default=64, help="how many probes of the suite (default 64 of 220)")
    ap.add_argument("--samples", type=int, default=12, help="samples per probe (default 12: the gate's second look)")
    ap.add_argument("--candidate", type=Path, default=None,
                    help="a trained model: also measure how the draws couple it with the base (~20 min here)")
    ap.add_argument("--coupling-samples", type=int, default=8, help="samples per probe for the coupling (default 8)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the report goes (tests/bench/results)")
    args = ap.parse_args(argv)
    from feedback.hardware import choose_dtype, cpu_flags
    from trainer.gate import PROBE_MAX_TOKENS

    dtype = args.dtype or choose_dtype().dtype
    result = measure(args.model, dtype, args.probes, args.samples, PROBE_MAX_TOKENS, 0.7)
    if args.candidate:
        result["coupling"] = coupling(args.model, args.candidate, dtype, args.coupling_samples, PROBE_MAX_TOKENS, 0.7)
    flags = " ".join(sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx"))))
    command = f"python -m tests.bench.gate_sampling --probes {args.probes} --samples {args.samples}"
    if args.candidate:
        command += f" --candidate {args.candidate} --coupling-samples {args.coupling_samples}"
    text = report(result, command, args.model, dtype, flags, os.cpu_count())
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "gate_sampling.md").write_text(text)
    (args.results / "gate_sampling.json").write_text(json.dumps({"command": command, "cpu_flags": flags,
                                                                 "dtype": dtype, **result}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
