"""The dtype is chosen from what the CPU does natively, unless the operator sets it."""
from __future__ import annotations

import pytest

from feedback.hardware import choose_dtype, cpu_flags
from serving.settings import GatewaySettings

ZEN4 = {"avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni"}
ZEN2 = {"avx2", "fma", "sse4_2"}  # the AVX2-only EPYC where bf16 decoded 4.4x slower
SAPPHIRE = {"avx2", "avx512f", "amx_bf16", "amx_tile"}
SKYLAKE = {"avx2", "avx512f", "avx512bw"}  # AVX-512 but no bf16


@pytest.fixture(autouse=True)
def _no_isa_cap(monkeypatch):
    # The suite itself may run under an ISA cap (an AVX2 emulation run): not these tests' input.
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("TAO_DTYPE", raising=False)


@pytest.mark.parametrize("flags, dtype", [(ZEN4, "bfloat16"), (SAPPHIRE, "bfloat16"), (ZEN2, "float32"),
                                          (SKYLAKE, "float32"), (set(), "float32")])
def test_bf16_only_where_the_cpu_has_it(flags, dtype):
    choice = choose_dtype("auto", flags=flags)
    assert choice.dtype == dtype
    assert ("native" in choice.reason) == (dtype == "bfloat16")


def test_cuda_and_the_operator_decide_first():
    assert choose_dtype("auto", cuda=True, flags=ZEN2).dtype == "bfloat16"
    assert choose_dtype("float32", cuda=True, flags=ZEN4).dtype == "float32"
    assert choose_dtype("bfloat16", flags=ZEN2).reason == "set by TAO_DTYPE"


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_the_gateway_passes_the_choice_to_vllm(monkeypatch):
    import serving.settings

    monkeypatch.setattr(serving.settings, "choose_dtype",
                        lambda setting, cuda: choose_dtype(setting, cuda=False, flags=ZEN2))
    monkeypatch.setattr("serving.vllm.is_vllm_cpu", lambda: True)
    args = GatewaySettings(vllm_whole_prefill="off", tool_call_parser=None).vllm_server_args()
    assert args == "--max-model-len 2048 --dtype float32"
    # The operator's own --dtype wins, and is reported as theirs.
    s = GatewaySettings(vllm_args="--max-model-len 1024 --dtype=bfloat16", vllm_whole_prefill="off", tool_call_parser=None)
    assert s.vllm_server_args().count("--dtype") == 1
    assert s.dtype_choice().dtype == "bfloat16" and "TAO_VLLM_ARGS" in s.dtype_choice().reason
    monkeypatch.setenv("TAO_DTYPE", "float16")
    assert GatewaySettings(vllm_whole_prefill="off", tool_call_parser=None).vllm_server_args().endswith("--dtype float16")


def test_a_onednn_isa_cap_below_bf16_means_float32(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    choice = choose_dtype("auto", flags=ZEN4)
    assert choice.dtype == "float32" and "ONEDNN_MAX_CPU_ISA" in choice.reason
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert choose_dtype("auto", flags=ZEN4).dtype == "bfloat16"
