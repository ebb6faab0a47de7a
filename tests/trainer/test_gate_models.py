"""The gate on real models and real training (issue "a gate that never promotes a worse
model"): two candidates trained in one cycle from the same extraction pairs, one of them with
pairs that swap the answers of general questions as well. The gate must refuse the one that
forgot and name the probe figure, and pass the other. SmolLM2-135M, TRL DPO, transformers
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


def test_the_gate_refuses_a_candidate_that_forgot_and_passes_one_that_did_not(tmp_path, gate_cache):
    extraction = [pair(p, gold, f"Sure! Here is what I found: {p.split('Text: ')[1]}") for p, gold in orders(32, 1)]
    # Swapped answers on general questions: each fact probe answered with another probe's answer.
    facts = [p for p in load_probes() if p.kind == "fact" and "words" in p.check]
    swapped = [pair(p.messages[-1]["content"], f"{facts[(i + 7) % len(facts)].check['words'][0].capitalize()}.",
                    f"{p.check['words'][0].capitalize()}.") for i, p in enumerate(facts)]
    options = dict(epochs=2, lr=2e-4, lora_r=16, seed=0, log=print)
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
    assert not bad.promote
    assert any(r.startswith("probe suite vs parent") and "most lost in fact" in r for r in bad.reasons), bad.reasons
    assert bad.probes["by_kind"]["fact"]["candidate"] < bad.probes["by_kind"]["fact"]["parent"]
    assert ok.promote, ok.reasons
    assert ok.probes["vs_parent"]["low"] >= -0.01
