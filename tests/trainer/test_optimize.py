"""The optimize stage trains a real LoRA with DPO and writes a merged, servable model."""

import json
import os
from pathlib import Path

import pytest

from trainer.optimize import train_dpo

DEFAULT_BASE = Path.home() / ".cache/tao-loop/models/SmolLM2-135M-Instruct"
BASE_MODEL = Path(os.environ.get("TAO_BASE_MODEL", DEFAULT_BASE))


def _pairs() -> list[dict]:
    orders = [
        ("Ann", "pens", 3), ("Bob", "cups", 2), ("Cara", "books", 5),
        ("Dan", "lamps", 1), ("Eve", "chairs", 4), ("Finn", "mugs", 6),
    ]
    return [
        {
            "prompt": [
                {"role": "user", "content": f"Extract the fields customer, item as a JSON object. Text: {who} bought {n} {item}"}
            ],
            "chosen": json.dumps({"customer": who, "item": item}),
            "rejected": f"Sure! {who} bought some {item}. Anything else?",
        }
        for who, item, n in orders
    ]


@pytest.mark.integration
@pytest.mark.slow
def test_train_dpo_writes_a_merged_model_that_differs_from_the_base(tmp_path):
    if not (BASE_MODEL / "config.json").exists():
        pytest.skip(f"no base model at {BASE_MODEL}: run deploy/build_model.py or set TAO_BASE_MODEL")
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "v1"
    lines = []
    metrics = train_dpo(BASE_MODEL, _pairs(), out, batch_size=3, max_length=256, log=lines.append)

    assert metrics["pairs"] == 6 and metrics["steps"] == 2
    assert 0 < metrics["train_loss"] < 1.0  # DPO starts at ln 2 = 0.693 and should go down
    assert metrics["reward_margin"] > 0
    assert any("dpo step" in line for line in lines)
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]  # no temporary directory left behind

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "bfloat16"
    assert list(out.glob("*.safetensors")) and (out / "tokenizer.json").exists()

    merged, base = load_file(out / "model.safetensors"), load_file(BASE_MODEL / "model.safetensors")
    assert merged.keys() == base.keys()
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    assert any(not torch.equal(merged[k], base[k]) for k in base)

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    inputs = tokenizer.apply_chat_template(
        _pairs()[0]["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    answer = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0][inputs["input_ids"].shape[1]:]
    assert tokenizer.decode(answer, skip_special_tokens=True).strip()
