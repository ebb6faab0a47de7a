"""A LoRA adapter of a version against the *base* model, for the gateway's `lora` swap mode.

Each cycle trains a LoRA on its parent and merges it, so version k is the base plus k
low-rank updates. vLLM serves adapters against the one base model it started with, so the
adapter of version k must be the whole difference (merged k) - (base), per linear layer.
That difference has rank at most the sum of the cycles' LoRA ranks; a truncated SVD
recovers it (exactly, up to bf16 rounding, while the sum fits in `rank`; beyond that, the
best rank-`rank` approximation, and `relative_error` says how close it is).

    from trainer.adapter import extract_adapter
    report = extract_adapter(base_dir, version_dir / "weights", version_dir / "adapter", rank=64)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# Linear layers of a Llama-style decoder, as PEFT names them ("all-linear" minus lm_head).
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_LINEAR = re.compile(r"^(model\.layers\.\d+\.(?:self_attn|mlp)\.(" + "|".join(TARGETS) + r"))\.weight$")


def _load(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    if not out:
        raise FileNotFoundError(f"no *.safetensors in {model_dir}")
    return out


def extract_adapter(base_dir: Path, merged_dir: Path, out_dir: Path, rank: int = 64, atol: float = 1e-6) -> dict:
    """Write a PEFT LoRA adapter (alpha = rank, so scaling 1) with merged = base + B @ A."""
    import torch
    from safetensors.torch import save_file

    base, merged = _load(base_dir), _load(merged_dir)
    if base.keys() != merged.keys():
        raise ValueError(f"{merged_dir} and {base_dir} are not the same architecture")
    tensors, err_num, err_den, targets = {}, 0.0, 0.0, set()
    for name, w_base in base.items():
        delta = merged[name].float() - w_base.float()
        m = _LINEAR.match(name)
        if m is None:
            # Only linear layers are trained; anything else that changed cannot be an adapter.
            if delta.abs().max().item() > atol:
                raise ValueError(f"{name} differs from the base and is not a LoRA target: serve weights, not lora")
            continue
        targets.add(m.group(2))
        total = float((delta ** 2).sum())
        r = min(rank, *delta.shape)
        if total == 0.0:
            u, s, v = delta.new_zeros(delta.shape[0], r), delta.new_zeros(r), delta.new_zeros(delta.shape[1], r)
        else:
            # Randomized SVD: the difference is low-rank plus rounding noise, which it finds
            # as well as a full SVD at a fraction of the cost (210 matrices a model).
            u, s, v = torch.svd_lowrank(delta, q=r, niter=4)
        b = u[:, :r] * s[:r]                      # (out, r)
        a = v[:, :r].T                            # (r, in)
        if r < rank:  # PEFT wants one rank for all modules: pad with zeros
            b = torch.nn.functional.pad(b, (0, rank - r))
            a = torch.nn.functional.pad(a, (0, 0, 0, rank - r))
        prefix = f"base_model.model.{m.group(1)}"
        tensors[f"{prefix}.lora_A.weight"] = a.contiguous().to(torch.bfloat16)
        tensors[f"{prefix}.lora_B.weight"] = b.contiguous().to(torch.bfloat16)
        err_num += max(0.0, total - float((s[:r] ** 2).sum()))
        err_den += total
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    (out_dir / "adapter_config.json").write_text(json.dumps(_config(rank, targets, base_dir), indent=2))
    # Share of the difference's energy the rank left out (0: exact up to bf16 rounding).
    relative_error = (err_num / err_den) ** 0.5 if err_den else 0.0
    return {"rank": rank, "modules": len(tensors) // 2, "relative_error": round(relative_error, 6)}


def _config(rank: int, targets: set[str], base_dir: Path) -> dict:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
            "target_modules": sorted(targets), "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
            "use_dora": False, "modules_to_save": None, "base_model_name_or_path": str(base_dir)}
