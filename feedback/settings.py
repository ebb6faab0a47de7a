"""Settings every tao process shares (`TaoSettings`), and the collector's own.

One environment, prefix TAO_, read by every process: a setting that two processes must agree
on (the broker, the data directory, the base model, how versions go live, the signing key,
the dtype) is declared once, in `TaoSettings`, with one validator. Each process's settings
class extends it: GatewaySettings (serving/settings.py), CollectorSettings (here: `tao
collect`, and the worker, which runs the collector as a thread), WorkerSettings
(trainer/settings.py), StackSettings (deploy/stack.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from feedback.hardware import DtypeChoice, DtypeSetting, choose_dtype
from feedback.kafka import Bootstrap

DEFAULT_BASE_MODEL = Path("~/.cache/tao-loop/models/SmolLM2-135M-Instruct").expanduser()  # where `make setup` puts it


class TaoSettings(BaseSettings):
    """What the gateway, the worker, the collector and `tao up` must agree on."""

    model_config = SettingsConfigDict(env_prefix="TAO_", extra="ignore")

    kafka_bootstrap: Bootstrap = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    data_dir: Path = Field(Path(".tao-data"), description="DuckDB file, snapshots, cycles, model versions, spill "
                           "journals, signing key, logs")
    base_model: Path = Field(DEFAULT_BASE_MODEL, description="directory of the base model (config.json, "
                             "*.safetensors): what a child vLLM starts with and the first cycle trains on")
    swap_mode: Literal["weights", "lora"] = Field(
        "weights", description="how a new version goes live: weights (reloaded in place, a short pause) or lora "
        "(an adapter loaded beside the live one, no pause; the worker also exports each version as an adapter, a "
        "truncated SVD of merged - base; vLLM runs with --enable-lora, which on CPU also turns off its graph "
        "compilation: measure the cost with `make bench-serving`)")
    lora_max_rank: int = Field(64, ge=1, description="largest adapter rank the gateways' vLLM accepts in lora mode, "
                               "and the rank of the adapters the worker exports")
    # A secret: excluded from dumps (the settings.json a cycle's child reads; the child gets it
    # in its environment, trainer.worker.child_env) and from repr, so files and logs miss it.
    signing_key: str | None = Field(None, exclude=True, repr=False, description="HMAC key of completion ids and "
                                    "tao.control events, shared by every gateway replica and the worker (unset: "
                                    "kept in DATA_DIR/signing.key)")
    dtype: DtypeSetting = Field(
        "auto", description="dtype vLLM and the gate compute in: auto = bfloat16 on a GPU or a CPU with "
        "AVX512_BF16/AMX_BF16, else float32 (bf16 is emulated, 4.4x slower, on AVX2-only CPUs). Training keeps "
        "float32 weights on a CPU regardless (bf16 autocast saved ~15% on a bf16 CPU, not worth bf16 rounding in "
        "summed log-probs)")

    # API keys: the gateway checks callers with them, the worker's console its admins.
    api_keys_file: Path | None = Field(None, description="file of hashed API keys written by `tao keys add` "
                                       "(unset: DATA_DIR/api_keys, if it exists)")
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        [], description='comma-separated "sha256:HEX" hashes of API keys (`tao keys hash KEY` prints one)')
    admin_key_hash: str | None = Field(None, description='"sha256:HEX" of the admin key (the gateway\'s admin '
                                       "routes, the worker's console); unset and no admin key in the file: both off")

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _hashes(cls, v):
        from feedback.auth import parse_hash

        items = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else list(v)
        return [parse_hash(x, "TAO_API_KEY_HASHES") for x in items]

    @field_validator("admin_key_hash")
    @classmethod
    def _admin_hash(cls, v: str | None) -> str | None:
        from feedback.auth import parse_hash

        return parse_hash(v, "TAO_ADMIN_KEY_HASH") if v else v

    def keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api_keys"

    def signing_key_bytes(self) -> bytes:
        from feedback.ids import shared_key

        return shared_key(self.signing_key, self.data_dir)

    def dtype_choice(self) -> DtypeChoice:
        """The dtype and why, from this CPU's flags (the gateway's own accounts for vLLM's build)."""
        return choose_dtype(self.dtype)


class CollectorSettings(TaoSettings):
    event_retention_days: float = Field(
        30, gt=0, description="how long Kafka keeps raw events (retention.ms of the topics tao creates); "
                              "`tao collect --rebuild` can restore only what is still there")
    collector_max_poll_records: int = Field(
        2000, ge=1, description="records per poll, written to DuckDB in one transaction")
    collector_metrics_port: int = Field(
        0, ge=0, le=65535, description="`tao collect` only: serve Prometheus /metrics on this port (0 = off); "
                                       "the worker serves them on its own port")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tao.duckdb"
