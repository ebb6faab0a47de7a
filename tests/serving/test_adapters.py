"""The zero adapter the gateway serves the base model as, in lora mode (serving/adapters.py)."""
from serving.adapters import zero_adapter
from tests.models import BASE_MODEL, require_base_model


def test_zero_adapter_has_every_module_at_the_right_shape(tmp_path):
    require_base_model()
    from safetensors.numpy import load_file

    out = zero_adapter(BASE_MODEL, tmp_path / "zero", rank=8)
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 30 * 7 and not any(t.any() for t in tensors.values())
    a = tensors["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]
    b = tensors["base_model.model.model.layers.0.mlp.down_proj.lora_B.weight"]
    assert a.shape == (8, 1536) and b.shape == (576, 8)
    assert zero_adapter(BASE_MODEL, tmp_path / "zero", rank=8) == out  # made once
