"""The adapter of a version against the base: base + adapter must behave like the merged model."""
import shutil

import pytest

from tests.models import BASE_MODEL, require_base_model
from trainer.adapter import extract_adapter


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """The base with a random rank-4 update on every q_proj and down_proj: a stand-in for
    two cycles of LoRA training, made in a second instead of minutes."""
    require_base_model()
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("merged")
    for f in BASE_MODEL.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy(f, out / f.name)
    weights = load_file(str(BASE_MODEL / "model.safetensors"))
    gen = torch.Generator().manual_seed(0)
    for name, w in weights.items():
        if name.endswith(("q_proj.weight", "down_proj.weight")):
            b = torch.randn(w.shape[0], 4, generator=gen) * 0.05
            a = torch.randn(4, w.shape[1], generator=gen) * 0.05
            weights[name] = (w.float() + b @ a).to(w.dtype)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _logits(model, tok, text="Extract the fields name and city: Ana lives in Porto."):
    import torch

    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits[0, -1].float()


def test_base_plus_adapter_behaves_like_the_merged_model(merged, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report = extract_adapter(BASE_MODEL, merged, tmp_path / "adapter", rank=8)
    assert report["modules"] == 30 * 7 and report["rank"] == 8
    # Rank 4 fits in 8: what is left out is the bf16 rounding of the merged weights (~6% of
    # this small update's norm), noise the logits below show does not matter.
    assert report["relative_error"] < 0.1

    tok = AutoTokenizer.from_pretrained(BASE_MODEL)
    base = AutoModelForCausalLM.from_pretrained(BASE_MODEL, dtype=torch.float32)
    l_base = _logits(base, tok)
    l_merged = _logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32), tok)
    l_adapter = _logits(PeftModel.from_pretrained(base, tmp_path / "adapter"), tok)
    changed = (l_merged - l_base).abs().max().item()
    off = (l_adapter - l_merged).abs().max().item()
    assert changed > 0.5, "the update must matter, or this test proves nothing"
    # Within a tenth of the update's effect: the merged weights are themselves rounded to bf16
    # (so is the adapter), and that rounding is all that separates the two.
    assert off < 0.1 * changed, (off, changed)
    assert l_adapter.topk(5).indices.tolist() == l_merged.topk(5).indices.tolist()


def test_a_rank_too_small_is_reported_not_hidden(merged, tmp_path):
    report = extract_adapter(BASE_MODEL, merged, tmp_path / "adapter", rank=2)
    assert report["relative_error"] > 0.3


def test_a_changed_embedding_cannot_be_an_adapter(merged, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other"
    shutil.copytree(merged, other)
    w = load_file(str(other / "model.safetensors"))
    w["model.embed_tokens.weight"] = w["model.embed_tokens.weight"] + torch.ones(1, dtype=torch.bfloat16)
    save_file(w, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="embed_tokens.*serve weights"):
        extract_adapter(BASE_MODEL, other, tmp_path / "adapter", rank=8)
