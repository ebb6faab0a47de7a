"""Weight interpolation between the parent and a trained candidate (WiSE-FT, Wortsman et al.
2022): out = parent + alpha x (candidate - parent), tensor by tensor. A fine-tuned model's
gains on its task survive interpolation better than its losses elsewhere, so the gate tries
the largest alpha that passes (trainer/cycle.py) before it gives up on a cycle's training.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def interpolate(parent_dir: Path, candidate_dir: Path, out_dir: Path, alpha: float) -> Path:
    """Write the mix as a servable model directory (the candidate's config and tokenizer) at
    `out_dir`, atomically. Both models must have the same tensors (one architecture)."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    shards = sorted(p.name for p in Path(candidate_dir).glob("*.safetensors"))
    if not shards:
        raise ValueError(f"{candidate_dir} has no *.safetensors weights to interpolate")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        for f in Path(candidate_dir).iterdir():  # config, tokenizer, index: the candidate's
            if f.is_file() and f.suffix != ".safetensors":
                shutil.copy2(f, tmp / f.name)
        parent_tensors = _tensors(Path(parent_dir))
        for shard in shards:
            out = {}
            with safe_open(Path(candidate_dir) / shard, "pt") as cand:
                for name in cand.keys():
                    if name not in parent_tensors:
                        raise ValueError(f"{name} is in the candidate, not in the parent {parent_dir}")
                    c = cand.get_tensor(name)
                    p = parent_tensors[name]
                    out[name] = (p.to(torch.float32) + alpha * (c.to(torch.float32) - p.to(torch.float32))).to(c.dtype)
            save_file(out, tmp / shard, metadata={"format": "pt"})
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _tensors(model_dir: Path) -> dict:
    """Every tensor of a model directory, by name, whatever its sharding."""
    from safetensors.torch import load_file

    out = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(shard))
    return out
