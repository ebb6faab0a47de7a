"""TAO optimize stage: DPO with a LoRA on preference pairs, merged into a servable model.

`train_dpo(base_model, pairs, out_dir)` trains a LoRA with TRL's DPOTrainer on the bare
prompts, merges it into the base weights and writes a bf16 safetensors directory that vLLM
can load at start or hot-swap in place (`reload_weights`). Runs on CPU in fp32.

    from trainer.optimize import train_dpo
    metrics = train_dpo(Path("models/base"), pairs, Path("models/v2"))
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def train_dpo(
    base_model: Path,
    pairs: list[dict],
    out_dir: Path,
    *,
    epochs: int = 1,
    lr: float = 2e-4,
    beta: float = 0.1,
    lora_r: int = 16,
    batch_size: int = 4,
    max_length: int = 512,
    log: Callable[[str], None] = print,
) -> dict:
    """Train on `pairs` ({"prompt": messages, "chosen": str, "rejected": str}) and write
    the merged model to `out_dir`, which must not exist yet. Returns training metrics."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; a model version directory is written once")

    # TRL treats a pair as conversational only when chosen/rejected are message lists too:
    # it renders prompt + chosen through the chat template, so the model learns the answer
    # exactly where it will produce it at serving time.
    rows = [
        {
            "prompt": p["prompt"],
            "chosen": [{"role": "assistant", "content": p["chosen"]}],
            "rejected": [{"role": "assistant", "content": p["rejected"]}],
        }
        for p in pairs
    ]
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            keys = ("loss", "rewards/margins", "rewards/accuracies")
            shown = " ".join(f"{k}={logs[k]:.3f}" for k in keys if k in (logs or {}))
            if shown:
                log(f"dpo step {state.global_step}/{state.max_steps} {shown}")

    steps = epochs * math.ceil(len(rows) / batch_size)
    with tempfile.TemporaryDirectory(prefix="tao-dpo-") as scratch:
        config = DPOConfig(
            output_dir=scratch,
            num_train_epochs=epochs,
            per_device_train_batch_size=batch_size,
            learning_rate=lr,
            beta=beta,
            max_length=max_length,
            # TRL defaults to bf16 mixed precision and gradient checkpointing; on CPU with a
            # small model both only cost time.
            bf16=False,
            use_cpu=True,
            gradient_checkpointing=False,
            logging_steps=max(1, steps // 4),
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = DPOTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=LoraConfig(
                r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
            ),
            callbacks=[_Log()],
        )
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; _Log says it shorter
        log(f"dpo: {len(rows)} pairs, {steps} steps, lora r={lora_r}, lr={lr}, beta={beta}")
        started = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - started

    started = time.perf_counter()
    merged = trainer.model.merge_and_unload().to(torch.bfloat16)
    merged.config.use_cache = True  # training turned the KV cache off; serving wants it
    # Write beside the target and rename, so readers never see a half-written version.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a version directory is shared
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _drop_quantization_config(tmp / "config.json")
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    save_seconds = time.perf_counter() - started
    log(f"dpo: trained in {train_seconds:.1f} s, merged and saved in {save_seconds:.1f} s to {out_dir}")

    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    metrics = {
        "pairs": len(rows),
        "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 2),
        "save_seconds": round(save_seconds, 2),
        "train_loss": float(result.training_loss),
    }
    if logged:
        metrics["reward_margin"] = float(logged[-1]["rewards/margins"])
        metrics["reward_accuracy"] = float(logged[-1]["rewards/accuracies"])
    return metrics


def _drop_quantization_config(path: Path) -> None:
    # A base model read from a quantized file (GGUF) keeps this key; vLLM then refuses
    # the plain bf16 weights ("Unknown quantization method").
    config = json.loads(path.read_text())
    if config.pop("quantization_config", None) is not None:
        path.write_text(json.dumps(config, indent=2) + "\n")
