"""The gate on real models and real training (issue "a gate that never promotes a worse
model"): two candidates trained from the same extraction pairs, one of them with pairs that
swap the answers of general questions as well. Both learnt the extraction task. The gate, at
its 1-point margin and with sampled probe answers, must refuse the one that forgot at its first
look (4 samples per probe, as at the defaults), name the probe figure and be sure of it, and
never show the other worse through the cycle's own gate stage: promoted, or refused only for
want of confidence (see the assertions).

8 samples per probe here, not the default 16, and no WiSE-FT mix tried: CI time. The test's
two claims do not need the rest. The refusal happens at the first look, which is the same
at 8 as at 16. The good candidate is only required never to be shown worse, which a wider
interval makes no likelier; tests/trainer/test_cycle.py covers walking the mixes. Costs, in
answers to the 220 probes (each about half a minute of sampling on a 2-core AVX-512 CPU
without bf16, float32): base 16 + forgot 4 + good 16 + a 0.5 mix 16 = 52 at the defaults
(29 minutes, 2026-12-07), base 8 + forgot 4 + good 8 = 20 here. Measured 2026-12-08, same
CPU: 1097 s in all, of which training both 218 s, held-out samples ~100 s, the probes' 20
answer sets ~670 s, the drift's log-probs ~80 s (CI on a fresh clone: 1110 s, against 1210 s
with 16 samples and the mix not needed that run).

Measured (docs/measurements.md, 2026-12-06, AVX-512 + AMX CPU, bf16): the candidate that
forgot -9.7 points [-13.6, -5.6] at the first look (4 samples; fact 0.43 -> 0.12; with the
probes' length checks, 2026-12-07 on an AVX-512 CPU without bf16: -6.9 [-10.6, -3.3], fact
0.26 -> 0.07, the fact kind alone -18.8 [-28.9, -10.0] at 99.2%; with the engine's own
inverse-CDF sampler, same CPU: -8.0 [-11.9, -4.2], the fact kind -20.8 [-33.3, -10.4]; it now
draws by keyed Gumbel-max, which couples the two models' samples more tightly); the
extraction-only one +0.9 [-0.3, +2.0] with all 16, promoted unmixed; with greedy probes the
same kind of candidate was -2.7 [-6.4, +0.9] and refused. SmolLM2-135M, TRL DPO, the
evaluation engine's own decoding loop on transformers; no vLLM. Moving the gate's sampling
to vLLM (issue "faster cycles") is what would let this test run at the defaults again."""
from __future__ import annotations

import json
import random

import pytest

from feedback.settings import DEFAULT_BASE_MODEL
from tests.e2e.traffic import ITEMS, NAMES, TEMPLATES
from trainer import cycle
from trainer.cycle import VERIFIERS
from trainer.gate import Gate
from trainer.job import CycleJob
from trainer.optimize import train
from trainer.probes import load_probes
from trainer.prompts import Prompt
from trainer.rewards import json_verifier
from trainer.settings import WorkerSettings

pytestmark = [pytest.mark.slow]
ASK = "Extract the fields customer, item, quantity, total from the text below. Reply with only a JSON object.\nText: "


def orders(n: int, seed: int) -> list[tuple[str, str]]:
    """(prompt, the right JSON answer): the labels are the test's, the gate never sees them."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        name, item, qty = rnd.choice(NAMES), rnd.choice(ITEMS), rnd.randint(2, 9)
        total = f"{rnd.randint(10, 400)}.{rnd.randint(0, 99):02d}"
        text = TEMPLATES[i % 3].format(name=name, item=item, qty=qty, total=total)
        out.append((ASK + text, json.dumps({"customer": name, "item": item, "quantity": qty, "total": total})))
    return out


def pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt_id": "t", "prompt": [{"role": "user", "content": prompt}], "chosen": chosen,
            "rejected": rejected, "margin": 1.0, "chosen_strategy": "test"}


@pytest.mark.timeout(3600)
def test_the_gate_refuses_a_candidate_that_forgot_and_is_sure_of_it(tmp_path, gate_cache):
    extraction = [pair(p, gold, f"Sure! Here is what I found: {p.split('Text: ')[1]}") for p, gold in orders(32, 1)]
    # Swapped answers on general questions: each fact probe answered with another probe's answer.
    facts = [p for p in load_probes() if p.kind == "fact" and "words" in p.check]
    swapped = [pair(p.messages[-1]["content"], f"{facts[(i + 7) % len(facts)].check['words'][0].capitalize()}.",
                    f"{p.check['words'][0].capitalize()}.") for i, p in enumerate(facts)]
    options = dict(epochs=1, lr=2e-4, lora_r=16, seed=0, log=print)
    good, forgot = tmp_path / "good" / "weights", tmp_path / "forgot" / "weights"
    good.parent.mkdir(), forgot.parent.mkdir()  # version directories, as a cycle makes them
    train("dpo_nll", DEFAULT_BASE_MODEL, extraction, good, **options)
    train("dpo_nll", DEFAULT_BASE_MODEL, extraction + swapped, forgot, **options)

    heldout = [Prompt(f"h{i}", [{"role": "user", "content": p}]) for i, (p, _) in enumerate(orders(16, 2))]
    # A cycle's gate settings (1-point margin, its confidence, the machine's dtype) but 8 sampled
    # answers per probe and the trained weights only (see the docstring); the parent is the base.
    s = WorkerSettings(data_dir=tmp_path, gate_cache_dir=gate_cache, gate_max_tokens=64, gate_mixes=[1.0],
                       gate_probe_samples=8)
    gate = Gate(DEFAULT_BASE_MODEL, DEFAULT_BASE_MODEL, heldout, {"json": (1.0, json_verifier)}, VERIFIERS,
                cache_dir=gate_cache, margin=s.gate_margin, confidence=s.gate_confidence, max_new_tokens=64,
                dtype=s.dtype_choice().dtype, probe_samples=s.gate_probe_samples,
                probe_temperature=s.gate_probe_temperature, heldout_samples=s.gate_heldout_samples)
    bad = gate.judge(forgot)
    print("forgot:", bad.reasons, json.dumps(bad.probes["by_kind"]), bad.probes["vs_parent"])

    # Both learnt the extraction task: better on held-out traffic, with confidence.
    assert bad.heldout_better, bad.win_interval
    # The one that forgot is refused on the probe suite, which it is shown to be worse on:
    # at the first look already (4 samples a probe), the interval wholly below the margin.
    assert not bad.promote and bad.probes.get("screened")
    assert any(r.startswith("probe suite vs parent") and "most lost in fact" in r for r in bad.reasons), bad.reasons
    assert bad.probes["vs_parent"]["high"] < -s.gate_margin
    # Facts are named on their own too, at the corrected confidence: lost, not a kind's noise.
    assert any(r.startswith("probe kind fact vs base") for r in bad.reasons), bad.reasons
    assert bad.probes["by_kind"]["fact"]["candidate"] < bad.probes["by_kind"]["fact"]["parent"] / 2

    # The other, through the cycle's own gate stage, judged with all 8 samples (past the first
    # look). What it learnt, it keeps on held-out traffic, and it is never shown worse than the
    # parent or the base beyond the margin, on the suite or in a kind. Promoted, or refused only
    # for want of confidence: it loses 0-0.4 points on the probes against an interval of about
    # +-1.1 at 16 samples x 220 probes (wider at 8), so whether the low end clears the 1-point
    # margin is luck (CI, 2026-12-07, 16 samples: -0.1 [-1.2, +0.9] unmixed, refused; other
    # runs +0.9 [-0.3, +2.0] unmixed, promoted). The one that forgot is shown worse (its high
    # end below the margin).
    job = CycleJob(cycle_id="c-test", since=None, version="v1", parent="base",
                   parent_path=str(DEFAULT_BASE_MODEL), snapshot=str(tmp_path / "none"))
    ok = cycle.gate(s, job, good, heldout, {"json": (1.0, json_verifier)})
    print("good:", ok.reasons, "mix", ok.mix, json.dumps(ok.tries), json.dumps(ok.probes["by_kind"]),
          ok.probes["vs_parent"], ok.win_interval)
    assert ok.probes["samples"] == s.gate_probe_samples and "screened" not in ok.probes
    assert ok.heldout_better, ok.tries
    for ref in ("vs_parent", "vs_base"):
        assert ok.probes[ref]["high"] >= -s.gate_margin, ok.tries
        assert not ok.promote or ok.probes[ref]["low"] >= -s.gate_margin, ok.tries
    assert not any(r.startswith("probe kind") for r in ok.reasons), ok.reasons
    # It kept its facts, which the swapped pairs took from the other.
    assert ok.probes["by_kind"]["fact"]["candidate"] > bad.probes["by_kind"]["fact"]["candidate"] + 0.1
