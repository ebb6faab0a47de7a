"""Gateway settings: environment variables with the prefix TAO_ (e.g. TAO_PORT=8000)."""
from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    request_timeout_s: float = Field(600, gt=0)
    signing_key: str | None = Field(None, description="HMAC key for completion ids; shared by all replicas. "
                                                      "Unset: kept in DATA_DIR/signing.key")

    @field_validator("vllm_url")
    @classmethod
    def _vllm_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"TAO_VLLM_URL must start with http:// or https://, got {v!r}")
        return v.rstrip("/") if v else v

    def signing_key_bytes(self) -> bytes:
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / "signing.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        return path.read_text().strip().encode()
