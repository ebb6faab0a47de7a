"""The gate on real models and real training (issue "a gate that never promotes a worse
model"): two candidates trained from the same extraction pairs, one of them with pairs that
swap the answers of general questions as well. Both learnt the extraction task. The gate must
refuse the one that forgot, name the probe figure, and be sure of it (its interval lies below
zero); the other's probe difference must be far smaller, its interval reaching above zero.

Measured (docs/measurements.md, 2026-12-06; this test's 1 epoch): the candidate that forgot
-11.8 points [-18.6, -5.0] (fact 0.63 -> 0.28); the extraction-only one -2.7 [-6.4, +0.9]
(code 0.93 -> 0.83), so at the 1-point margin the gate refuses it as well, for that alone; at n=220 probes a 1-point margin can be shown only by a
candidate that changes almost no probe's verdict (one lost, none gained: -1.4 at the low end). SmolLM2-135M, TRL DPO, transformers
generation; no vLLM. Several minutes on a 2-core CPU."""
from __future__ import annotations

import json
import random

import pytest

from feedback.settings import DEFAULT_BASE_MODEL
from tests.e2e.traffic import ITEMS, NAMES, TEMPLATES
from trainer.cycle import VERIFIERS
from trainer.gate import Gate
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


def test_the_gate_refuses_a_candidate_that_forgot_and_is_sure_of_it(tmp_path, gate_cache):
    extraction = [pair(p, gold, f"Sure! Here is what I found: {p.split('Text: ')[1]}") for p, gold in orders(32, 1)]
    # Swapped answers on general questions: each fact probe answered with another probe's answer.
    facts = [p for p in load_probes() if p.kind == "fact" and "words" in p.check]
    swapped = [pair(p.messages[-1]["content"], f"{facts[(i + 7) % len(facts)].check['words'][0].capitalize()}.",
                    f"{p.check['words'][0].capitalize()}.") for i, p in enumerate(facts)]
    options = dict(epochs=1, lr=2e-4, lora_r=16, seed=0, log=print)
    good, forgot = tmp_path / "good", tmp_path / "forgot"
    train("dpo_nll", DEFAULT_BASE_MODEL, extraction, good, **options)
    train("dpo_nll", DEFAULT_BASE_MODEL, extraction + swapped, forgot, **options)

    heldout = [Prompt(f"h{i}", [{"role": "user", "content": p}]) for i, (p, _) in enumerate(orders(16, 2))]
    gate = Gate(DEFAULT_BASE_MODEL, DEFAULT_BASE_MODEL, heldout, {"json": (1.0, json_verifier)}, VERIFIERS,
                cache_dir=gate_cache, margin=0.01, confidence=0.95, max_new_tokens=64,
                dtype=WorkerSettings().dtype_choice().dtype)  # the machine's, as a cycle's gate does
    bad = gate.judge(forgot)
    print("forgot:", bad.reasons, json.dumps(bad.probes["by_kind"]))
    ok = gate.judge(good)
    print("good:", ok.reasons, json.dumps(ok.probes["by_kind"]), ok.probes["vs_parent"])

    # Both learnt the extraction task: better on held-out traffic, with confidence.
    assert bad.heldout_better and ok.heldout_better, (bad.win_interval, ok.win_interval)
    # The one that forgot is refused on the probe suite, which it is shown to be worse on.
    assert not bad.promote
    assert any(r.startswith("probe suite vs parent") and "most lost in fact" in r for r in bad.reasons), bad.reasons
    assert bad.probes["vs_parent"]["high"] < 0
    assert bad.probes["by_kind"]["fact"]["candidate"] < bad.probes["by_kind"]["fact"]["parent"] - 0.2
    # The other lost less, and kept its facts (what the swapped pairs took); if refused, then
    # only for not being shown within the margin on the probes. (Its interval's high end sat
    # at +0.9 here: too close to 0 to assert on another CPU's numerics.)
    assert ok.probes["vs_parent"]["value"] > bad.probes["vs_parent"]["value"]
    assert ok.probes["by_kind"]["fact"]["candidate"] > bad.probes["by_kind"]["fact"]["candidate"] + 0.2
    assert ok.promote or all(r.startswith("probe suite vs") for r in ok.reasons), ok.reasons
