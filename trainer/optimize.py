"""TAO optimize stage: fine-tune a LoRA with TRL, merge it and write a servable model.

`train(method, base_model, pairs, out_dir)` picks the objective:
- "dpo": DPOTrainer on best-vs-worst pairs on the bare prompt;
- "dpo_nll" (default in the cycle): the same plus an NLL term on the chosen answer (RPO; TRL's
  loss_type "sft"), which keeps the chosen answer likely instead of only pushing the pair apart;
- "sft": SFTTrainer on prompt + best answer (rejection sampling), loss on the answer only;
- "grpo": GRPOTrainer on the pairs' prompts, sampling online and scored by `reward_fn`.
Every method trains the same LoRA, merges it into the base weights and writes a bf16
safetensors directory that vLLM can load at start or hot-swap in place (`reload_weights`).
Runs on CPU in fp32.

    from trainer.optimize import train
    metrics = train("dpo", Path("models/base"), pairs, Path("models/v2"))
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.chat_template import TOOLS_TEMPLATE, needs_tools_template
from trainer.prompts import answer_turn

if TYPE_CHECKING:
    from trainer.pairs import Pair

METHODS = ("dpo", "dpo_nll", "sft", "grpo")

# A rejected answer is cut to this many tokens. DPO pads each step's chosen and rejected rows to
# the longest of them, so one rambling 128-token answer made all 2 x batch rows that long, and
# on CPU a step costs in proportion to its padded tokens: cutting at 64 made steps ~1/3 cheaper.
# The start of a bad answer carries what makes it bad, and 64 is about twice a JSON answer, so
# chatter after a JSON object stays in the rejected text.
REJECTED_TOKENS = 64


def train(
    method: str,
    base_model: Path,
    pairs: list[Pair],
    out_dir: Path,
    *,
    reward_fn: Callable[[list[dict], list[str]], list[float | None]] | None = None,
    **options,
) -> dict:
    """Train `method` on `pairs` ({"prompt": messages, "chosen": str, "rejected": str}) and
    write the merged model to `out_dir`. "grpo" uses only the pairs' prompts and needs
    `reward_fn(prompt, answers) -> scores`. `options` go to the method's function."""
    if method == "dpo":
        return train_dpo(base_model, pairs, out_dir, **options)
    if method == "dpo_nll":
        return train_dpo(base_model, pairs, out_dir, nll_weight=options.pop("nll_weight", 1.0), **options)
    if method == "sft":
        return train_sft(base_model, pairs, out_dir, **options)
    if method == "grpo":
        if reward_fn is None:
            raise ValueError("method 'grpo' needs reward_fn(prompt, answers) -> scores")
        prompts = list({json.dumps(p["prompt"], sort_keys=True): p["prompt"] for p in pairs}.values())
        return train_grpo(base_model, prompts, reward_fn, out_dir, **options)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def train_dpo(
    base_model: Path,
    pairs: list[Pair],
    out_dir: Path,
    *,
    epochs: int = 1,
    lr: float = 2e-4,
    beta: float = 0.1,
    lora_r: int = 16,
    batch_size: int = 4,
    max_length: int = 512,
    nll_weight: float = 0.0,
    seed: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """DPO on `pairs`; `nll_weight` > 0 adds that much NLL on the chosen answer (RPO)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("train_dpo needs at least one preference pair")
    _check_new(out_dir)
    tokenizer, model = _load(base_model, seed)
    # TRL treats a pair as conversational only when chosen/rejected are message lists too:
    # it renders prompt + chosen through the chat template, so the model learns the answer
    # exactly where it will produce it at serving time.
    rows = [
        {
            "prompt": p["prompt"],
            "chosen": [answer_turn(p["chosen"], p.get("chosen_calls"))],
            "rejected": [answer_turn(_head(tokenizer, p["rejected"], REJECTED_TOKENS), p.get("rejected_calls"))],
            **_tools(p),
        }
        for p in pairs
    ]
    name = "dpo_nll" if nll_weight else "dpo"
    steps = epochs * math.ceil(len(rows) / batch_size)
    # TRL 1.16 has no rpo_alpha: the NLL term is the "sft" loss type, weighted in loss_weights.
    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, nll_weight]} if nll_weight else {}
    with tempfile.TemporaryDirectory(prefix=f"tao-{name}-") as scratch, _tools_template(tokenizer, rows):
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**_args(scratch, epochs, batch_size, lr, steps, seed), beta=beta, max_length=max_length, **losses),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=_lora(lora_r),
        )
        log(f"{name}: {len(rows)} pairs, {steps} steps, lora r={lora_r}, lr={lr}, beta={beta}, nll={nll_weight}")
        metrics = _fit(trainer, name, ("loss", "rewards/margins", "rewards/accuracies", "logps/chosen"), log)
    metrics = {"pairs": len(rows), **metrics, **_save_merged(trainer.model, tokenizer, out_dir, name, log)}
    logged = [entry for entry in trainer.state.log_history if "rewards/margins" in entry]
    if logged:
        metrics["reward_margin"] = float(logged[-1]["rewards/margins"])
        metrics["reward_accuracy"] = float(logged[-1]["rewards/accuracies"])
        metrics["chosen_logp"] = float(logged[-1]["logps/chosen"])  # what the NLL term pushes up
    if nll_weight:
        metrics["nll_weight"] = nll_weight
    return metrics


def train_sft(
    base_model: Path,
    pairs: list[Pair],
    out_dir: Path,
    *,
    epochs: int = 1,
    lr: float = 2e-4,
    lora_r: int = 16,
    batch_size: int = 4,
    max_length: int = 512,
    seed: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """SFT on each pair's prompt + chosen answer (rejection sampling); "rejected" is unused."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if not pairs:
        raise ValueError("train_sft needs at least one example")
    _check_new(out_dir)
    tokenizer, model = _load(base_model, seed)
    # Conversational prompt-completion rows: TRL renders them through the chat template and,
    # by default for this shape, computes the loss on the completion tokens only.
    rows = [{"prompt": p["prompt"], "completion": [answer_turn(p["chosen"], p.get("chosen_calls"))], **_tools(p)}
            for p in pairs]
    steps = epochs * math.ceil(len(rows) / batch_size)
    with tempfile.TemporaryDirectory(prefix="tao-sft-") as scratch, _tools_template(tokenizer, rows):
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**_args(scratch, epochs, batch_size, lr, steps, seed), max_length=max_length),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=_lora(lora_r),
        )
        log(f"sft: {len(rows)} examples, {steps} steps, lora r={lora_r}, lr={lr}")
        metrics = _fit(trainer, "sft", ("loss", "mean_token_accuracy"), log)
    metrics = {"pairs": len(rows), **metrics, **_save_merged(trainer.model, tokenizer, out_dir, "sft", log)}
    logged = [entry for entry in trainer.state.log_history if "mean_token_accuracy" in entry]
    if logged:
        metrics["token_accuracy"] = float(logged[-1]["mean_token_accuracy"])
    return metrics


def train_grpo(
    base_model: Path,
    prompts: list[list[dict]],
    reward_fn: Callable[[list[dict], list[str]], list[float | None]],
    out_dir: Path,
    *,
    epochs: int = 1,
    lr: float = 2e-5,
    lora_r: int = 16,
    generations: int = 4,
    max_completion_length: int = 64,
    temperature: float = 1.0,
    seed: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """GRPO: sample `generations` answers per prompt with the policy, score each group with
    `reward_fn(prompt, answers)` (None = no opinion) and push toward the better ones.
    Generates with transformers on CPU, so it is slow; keep prompts few and answers short."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    if not prompts:
        raise ValueError("train_grpo needs at least one prompt")
    _check_new(out_dir)
    tokenizer, model = _load(base_model, seed)

    def reward(prompts, completions, **kwargs):
        # TRL passes every (prompt, completion) flat, each prompt repeated per generation;
        # our reward sources score a whole group at once, as in the score stage.
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(json.dumps(prompt, sort_keys=True), []).append(i)
        scores: list[float | None] = [None] * len(completions)
        for indexes in groups.values():
            answers = [completions[i][-1]["content"] for i in indexes]
            for i, score in zip(indexes, reward_fn(prompts[indexes[0]], answers), strict=True):
                scores[i] = score
        return scores

    # One optimizer step per prompt: a batch is exactly one prompt's group of generations.
    steps = epochs * len(prompts)
    with tempfile.TemporaryDirectory(prefix="tao-grpo-") as scratch:
        config = GRPOConfig(
            **_args(scratch, epochs, generations, lr, steps, seed),
            num_generations=generations,
            max_completion_length=max_completion_length,
            temperature=temperature,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
            processing_class=tokenizer,
            peft_config=_lora(lora_r),
        )
        log(f"grpo: {len(prompts)} prompts x {generations} answers, {steps} steps, lora r={lora_r}, lr={lr}")
        metrics = _fit(trainer, "grpo", ("loss", "reward", "reward_std", "completions/mean_length"), log)
    metrics = {"prompts": len(prompts), **metrics, **_save_merged(trainer.model, tokenizer, out_dir, "grpo", log)}
    logged = [entry for entry in trainer.state.log_history if "reward" in entry]
    if logged:
        metrics["reward"] = float(logged[-1]["reward"])
    return metrics


def _check_new(out_dir: Path) -> None:
    if Path(out_dir).exists():
        raise FileExistsError(f"{out_dir} exists; a model version directory is written once")


def _load(base_model: Path, seed: int | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    if seed is not None:
        # Before the model and the LoRA exist: TRL wraps the model in its LoRA before the
        # Trainer seeds anything, so without this the LoRA's initial weights differ every run.
        set_seed(seed)

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    return tokenizer, AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)


def _lora(r: int):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type="CAUSAL_LM")


def _args(scratch: str, epochs: int, batch_size: int, lr: float, steps: int, seed: int | None = None) -> dict:
    """TrainingArguments shared by the TRL configs."""
    return dict(
        **({"seed": seed, "data_seed": seed} if seed is not None else {}),
        output_dir=scratch,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        # TRL defaults to bf16 mixed precision and gradient checkpointing. On CPU with a small
        # model checkpointing only costs time; bf16 autocast saved ~15% on top of the rejected
        # cut, not worth bf16 rounding in log-probs summed over a whole answer.
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        logging_steps=max(1, steps // 4),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )


def _fit(trainer, name: str, keys: tuple[str, ...], log: Callable[[str], None]) -> dict:
    """Train with short log lines; returns steps, seconds and the mean training loss."""
    from transformers import PrinterCallback, TrainerCallback

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = " ".join(f"{k}={logs[k]:.3f}" for k in keys if k in (logs or {}))
            if shown:
                log(f"{name} step {state.global_step}/{state.max_steps} {shown}")

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; _Log says it shorter
    trainer.add_callback(_Log())
    started = time.perf_counter()
    result = trainer.train()
    return {
        "steps": trainer.state.global_step,
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_loss": float(result.training_loss),
    }


def _save_merged(peft_model, tokenizer, out_dir: Path, name: str, log: Callable[[str], None]) -> dict:
    """Merge the LoRA into the base weights and write a bf16 model directory atomically."""
    import torch

    started = time.perf_counter()
    out_dir = Path(out_dir)
    merged = peft_model.merge_and_unload().to(torch.bfloat16)
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
    seconds = time.perf_counter() - started
    log(f"{name}: merged and saved in {seconds:.1f} s to {out_dir}")
    return {"save_seconds": round(seconds, 2)}


def _tools(pair: Pair) -> dict:
    """A pair of a request that offered tools: TRL renders its prompt with them (a JSON text,
    so rows with and without tools make one Arrow column)."""
    return {"tools": json.dumps(pair["tools"]) if pair.get("tools") else None}


@contextmanager
def _tools_template(tokenizer, rows: list[dict]):
    """While TRL tokenizes rows with tools or tool calls, a model whose own template shows no
    tools (SmolLM2) renders with the template its vLLM serves them with, so a call is learnt in
    the tokens the model writes and the hermes parser reads. The saved model keeps its own."""
    own = tokenizer.chat_template or ""
    shows_tools = any(r.get("tools") or any(m.get("tool_calls") for m in r.get("chosen", []) + r.get("completion", []))
                      for r in rows)
    if shows_tools and needs_tools_template(own):
        tokenizer.chat_template = TOOLS_TEMPLATE.read_text()
    try:
        yield
    finally:
        tokenizer.chat_template = own or None


def _head(tokenizer, text: str, tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= tokens else tokenizer.decode(ids[:tokens])


def _drop_quantization_config(path: Path) -> None:
    # A base model read from a quantized file (GGUF) keeps this key; vLLM then refuses
    # the plain bf16 weights ("Unknown quantization method").
    config = json.loads(path.read_text())
    if config.pop("quantization_config", None) is not None:
        path.write_text(json.dumps(config, indent=2) + "\n")
