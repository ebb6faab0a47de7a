"""WiSE-FT interpolation (trainer/interpolate.py) on real safetensors files."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trainer.interpolate import interpolate


def model_dir(path, tensors, shard="model.safetensors"):
    path.mkdir(exist_ok=True)
    save_file(tensors, path / shard, metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps({"who": path.name}))
    return path


def test_the_mix_is_parent_plus_alpha_times_the_difference(tmp_path):
    parent = model_dir(tmp_path / "parent", {"w": torch.zeros(4, dtype=torch.bfloat16), "b": torch.ones(2)})
    cand = model_dir(tmp_path / "cand", {"w": torch.full((4,), 2.0, dtype=torch.bfloat16), "b": torch.full((2,), 3.0)})
    out = interpolate(parent, cand, tmp_path / "mix", 0.25)
    got = load_file(out / "model.safetensors")
    assert got["w"].dtype == torch.bfloat16 and got["w"].tolist() == [0.5] * 4
    assert got["b"].tolist() == [1.5, 1.5]
    assert json.loads((out / "config.json").read_text()) == {"who": "cand"}  # the candidate's config
    assert load_file(interpolate(parent, cand, tmp_path / "zero", 0.0) / "model.safetensors")["b"].tolist() == [1, 1]


def test_mismatched_models_are_refused_and_leave_nothing(tmp_path):
    parent = model_dir(tmp_path / "parent", {"w": torch.zeros(4)})
    cand = model_dir(tmp_path / "cand", {"w": torch.zeros(4), "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="extra is in the candidate"):
        interpolate(parent, cand, tmp_path / "mix", 0.5)
    with pytest.raises(ValueError, match="alpha"):
        interpolate(parent, cand, tmp_path / "mix", 1.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cand", "parent"]
