"""The optimize stage trains a real LoRA (DPO, DPO+NLL, SFT, GRPO) and writes a merged, servable model."""

import json
from pathlib import Path

import pytest

from tests.models import BASE_MODEL, require_base_model
from trainer.optimize import train, train_dpo


pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_base_model():
    require_base_model()


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


def _load(model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def _mean_logprob(model, sequences: list[tuple[list[int], list[int]]]) -> float:
    """Mean log-probability per token of each sequence's answer: (prompt ids, prompt + answer ids)."""
    import torch

    total, count = 0.0, 0
    for prompt, whole in sequences:
        ids = torch.tensor([whole])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].float().log_softmax(-1)
        targets = ids[0, len(prompt):]
        total += logps[len(prompt) - 1:].gather(1, targets[:, None]).sum().item()
        count += len(targets)
    return total / count


def _chosen_logprob(model_dir: Path) -> float:
    """Mean log-probability per token of the chosen answers after their prompts."""
    tokenizer, model = _load(model_dir)
    seqs = []
    for pair in _pairs():
        prompt = list(tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True,
                                                    return_dict=True)["input_ids"])
        seqs.append((prompt, prompt + tokenizer(pair["chosen"], add_special_tokens=False)["input_ids"]))
    return _mean_logprob(model, seqs)


@pytest.fixture(scope="module")
def base_logprob() -> float:
    return _chosen_logprob(BASE_MODEL)


def _assert_servable(out: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary directory left behind
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


def test_train_dpo_writes_a_merged_model_that_differs_from_the_base(tmp_path):
    out = tmp_path / "v1"
    lines = []
    metrics = train_dpo(BASE_MODEL, _pairs(), out, batch_size=3, max_length=256, log=lines.append)

    assert metrics["pairs"] == 6 and metrics["steps"] == 2
    assert 0 < metrics["train_loss"] < 1.0  # DPO starts at ln 2 = 0.693 and should go down
    assert metrics["reward_margin"] > 0
    assert "nll_weight" not in metrics
    assert any("dpo step" in line for line in lines)
    _assert_servable(out)


def test_dpo_nll_adds_the_nll_term_and_raises_the_chosen_answer(tmp_path, base_logprob):
    out = tmp_path / "v1"
    lines = []
    metrics = train("dpo_nll", BASE_MODEL, _pairs(), out, batch_size=3, log=lines.append)

    assert metrics["pairs"] == 6 and metrics["steps"] == 2 and metrics["nll_weight"] == 1.0
    # DPO alone averages at most ln 2 = 0.693; the chosen JSON costs the base ~0.5 nats a token on top.
    assert metrics["train_loss"] > 0.75
    assert any("dpo_nll step" in line for line in lines)
    assert _chosen_logprob(out) > base_logprob + 0.05
    _assert_servable(out)


def test_sft_moves_the_model_toward_the_chosen_answers(tmp_path, base_logprob):
    out = tmp_path / "v1"
    lines = []
    metrics = train("sft", BASE_MODEL, _pairs(), out, batch_size=3, epochs=2, log=lines.append)

    assert metrics["pairs"] == 6 and metrics["steps"] == 4
    assert metrics["train_loss"] > 0
    assert any("sft step" in line for line in lines)
    assert _chosen_logprob(out) > base_logprob + 0.1
    _assert_servable(out)


def test_grpo_samples_scores_groups_and_writes_a_loadable_model(tmp_path):
    seen = []

    def shorter_is_better(prompt: list[dict], answers: list[str]) -> list[float]:
        seen.append((prompt, len(answers)))
        return [-len(answer) / 100 for answer in answers]

    out = tmp_path / "v1"
    lines = []
    pairs = _pairs()[:2] + _pairs()[:1]  # a repeated prompt is trained once
    metrics = train(
        "grpo", BASE_MODEL, pairs, out, reward_fn=shorter_is_better,
        generations=3, max_completion_length=12, lr=1e-4, log=lines.append,
    )

    assert metrics["prompts"] == 2 and metrics["steps"] == 2
    assert "reward" in metrics and metrics["reward"] <= 0
    # each call scored one prompt's whole group, with the prompt as messages
    assert seen and all(n == 3 and prompt[0]["role"] == "user" for prompt, n in seen)
    assert any("grpo step" in line for line in lines)
    _assert_servable(out)


def test_unknown_method_and_grpo_without_reward_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        train("ppo", BASE_MODEL, _pairs(), tmp_path / "v1")
    with pytest.raises(ValueError, match="reward_fn"):
        train("grpo", BASE_MODEL, _pairs(), tmp_path / "v1")


def test_a_seed_makes_training_repeatable(tmp_path):
    from safetensors.torch import load_file

    def weights(name, seed):
        train_dpo(BASE_MODEL, _pairs(), tmp_path / name, batch_size=3, max_length=256, seed=seed, log=print)
        return load_file(tmp_path / name / "model.safetensors")

    a, b = weights("a", 7), weights("b", 7)
    base = load_file(BASE_MODEL / "model.safetensors")
    assert any(not (a[k] == base[k]).all() for k in a)  # it trained: equal runs are not two copies of the base
    assert all((a[k] == b[k]).all() for k in a)


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CITIES = ["Lima", "Oslo", "Kyoto", "Porto", "Dublin", "Austin"]


def _tool_pairs() -> list[dict]:
    """Pairs of a request that offered a tool: the right call against a call with an invented city."""
    return [{"prompt": [{"role": "user", "content": f"What is the weather in {city} right now?"}],
             "chosen": "", "rejected": "", "tools": [WEATHER],
             "chosen_calls": [{"name": "get_weather", "arguments": json.dumps({"city": city})}],
             "rejected_calls": [{"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}]}
            for city in CITIES]


def _call_logprob(model_dir: Path) -> float:
    """Mean log-probability per token of the right call, written as the served model writes
    one (the tools template vLLM serves SmolLM2 with), after the prompt that shows the tool."""
    from schemas.chat_template import TOOLS_TEMPLATE

    tokenizer, model = _load(model_dir)
    template = TOOLS_TEMPLATE.read_text()
    seqs = []
    for pair in _tool_pairs():
        call = {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": pair["chosen_calls"][0]}]}
        prompt = list(tokenizer.apply_chat_template(pair["prompt"], tools=[WEATHER], chat_template=template,
                                                    add_generation_prompt=True, return_dict=True)["input_ids"])
        whole = list(tokenizer.apply_chat_template(pair["prompt"] + [call], tools=[WEATHER], chat_template=template,
                                                   return_dict=True)["input_ids"])
        assert whole[:len(prompt)] == prompt and "<tool_call>" in tokenizer.decode(whole[len(prompt):])
        seqs.append((prompt, whole))
    return _mean_logprob(model, seqs)


def test_tool_call_pairs_are_trained_as_calls_in_the_served_format(tmp_path):
    out = tmp_path / "v1"
    before = _call_logprob(BASE_MODEL)
    metrics = train("dpo_nll", BASE_MODEL, _tool_pairs(), out, batch_size=3, epochs=2, log=print)
    assert metrics["pairs"] == 6
    after = _call_logprob(out)
    # Rendered without the tools (the model's own template drops tool_calls), chosen and rejected
    # were the same empty turn: margin 0.000 and the call's log-prob -0.68 -> -0.62; rendered
    # as served: margin 0.36 and -0.68 -> -0.44.
    assert metrics["reward_margin"] > 0.1
    assert after > before + 0.15, (before, after)
    # The saved model keeps its own template: the gateway decides which one vLLM serves with.
    saved = json.loads((out / "tokenizer_config.json").read_text()).get("chat_template") or (
        (out / "chat_template.jinja").read_text() if (out / "chat_template.jinja").exists() else "")
    assert "<tool_call>" not in saved
