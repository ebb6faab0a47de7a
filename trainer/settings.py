"""Worker settings (collector + scheduler + TAO cycle): environment variables prefixed TAO_."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.kafka import Bootstrap


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAO_", extra="ignore")

    kafka_bootstrap: Bootstrap = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    data_dir: Path = Field(Path(".tao-data"), description="DuckDB file, snapshots, cycles, model versions")
    base_model: Path = Field(Path("~/.cache/tao-loop/models/SmolLM2-135M-Instruct").expanduser(),
                             description="model the first cycle starts from")
    explore_url: str = Field("http://127.0.0.1:8100", description="vLLM OpenAI server used for exploration "
                             "(the serving vLLM itself, never the gateway: exploration is not production traffic)")
    worker_host: str = "127.0.0.1"
    worker_port: int = Field(8001, ge=0, le=65535, description="worker status/trigger HTTP port")
    # Scheduling
    cycle_interval_s: float = Field(3600, gt=0, description="seconds between scheduled TAO cycles")
    min_new_prompts: int = Field(16, ge=1, description="a scheduled cycle runs only with this many new prompts")
    max_prompts: int = Field(256, ge=1, description="prompts explored per cycle at most")
    # Explore
    samples_per_strategy: int = Field(4, ge=1, le=16)
    explore_max_tokens: int = Field(160, ge=8)
    explore_concurrency: int = Field(8, ge=1)
    # Score: weights of the reward sources in the ensemble
    weight_verifier: float = Field(1.0, ge=0)
    weight_feedback: float = Field(1.0, ge=0)
    # Pairs
    min_margin: float = Field(0.3, ge=0, le=1, description="best-worst reward gap needed for a DPO pair")
    min_best: float = Field(0.5, ge=0, le=1, description="the chosen answer must score at least this")
    min_pairs: int = Field(4, ge=1, description="fewer pairs than this: no training, no new version")
    # Optimize
    epochs: int = Field(1, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    beta: float = Field(0.1, gt=0)
    lora_r: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "WorkerSettings":
        if self.weight_verifier == 0 and self.weight_feedback == 0:
            raise ValueError("at least one of TAO_WEIGHT_VERIFIER, TAO_WEIGHT_FEEDBACK must be > 0")
        return self

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tao.duckdb"
