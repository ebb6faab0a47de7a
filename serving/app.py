"""The gateway app: `create_app(settings)`; run it with `tao gateway` (see serving/main.py).

Routes: POST /v1/chat/completions, GET /v1/models, POST /v1/feedback (API key, rate limit),
/admin/* (admin key), GET /healthz, /readyz, /metrics (open: for probes and Prometheus).
Every answer from the model carries the header x-tao-model-version.
"""
from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from feedback import api as feedback_api
from feedback.procs import free_port
from feedback.producer import EventProducer
from serving import admin, errors
from feedback.auth import KeyRing
from serving.chat import VERSION_HEADER, ChatRequest, ChatService
from serving.control import ControlConsumer
from serving.deps import ChatDep, GateDep, KeysDep, MetricsDep, ProducerDep, SettingsDep, StartedAtDep, SupervisorDep
from serving.guard import Guard, RateLimiter
from serving.limits import PromptCounter, RequestLimits
from serving.metrics import GatewayMetrics
from serving.settings import GatewaySettings
from serving.swap import Swapper
from serving.vllm import VLLMClient, VLLMSupervisor

log = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, chat: ChatDep, request: Request):
    return await chat.complete(req, feedback_api.bearer_key(request))


@router.get("/v1/models")
async def list_models(s: SettingsDep, gate: GateDep, started_at: StartedAtDep):
    card = {"id": s.model_name, "object": "model", "created": int(started_at), "owned_by": "tao-loop",
            "version": gate.version}
    return JSONResponse({"object": "list", "data": [card]}, headers={VERSION_HEADER: gate.version})


@router.get("/healthz")
async def healthz(gate: GateDep):
    return {"status": "ok", "version": gate.version}


@router.get("/readyz")
async def readyz(gate: GateDep, supervisor: SupervisorDep, producer: ProducerDep, keys: KeysDep):
    ready = supervisor is None or supervisor.ready.is_set()
    body = {"ready": ready, "vllm": supervisor.state if supervisor else "external", "version": gate.version,
            "kafka_connected": producer.connected, "events": producer.counters.as_dict(), "auth": keys.mode,
            "api_keys_configured": keys.configured}  # False in mode keys: every request gets 401
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def metrics(m: MetricsDep):
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)


def _child_vllm(settings: GatewaySettings) -> VLLMSupervisor:
    """The supervisor of the gateway's own vLLM, not started yet."""
    if not (settings.base_model / "config.json").exists():
        raise RuntimeError(f"no model at {settings.base_model}: run `make setup` or set TAO_BASE_MODEL")
    choice = settings.dtype_choice()
    log.info("vLLM dtype %s: %s", choice.dtype, choice.reason)
    return VLLMSupervisor(settings.base_model, settings.vllm_port or free_port(), settings.vllm_server_args(),
                          settings.data_dir / "logs" / f"vllm-{settings.port}.log", settings.vllm_start_timeout_s)


def create_app(settings: GatewaySettings) -> FastAPI:
    keys = KeyRing(settings.keys_path(), settings.api_key_hashes, settings.admin_key_hash,
                   allow_open=settings.auth == "open")
    metrics = GatewayMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        producer = EventProducer(settings.kafka_bootstrap, settings.data_dir / "spill" / f"gateway-{settings.port}",
                                 client_id=f"tao-gateway-{settings.port}").start()
        supervisor = None if settings.vllm_url else _child_vllm(settings)
        vllm = VLLMClient(settings.vllm_url or supervisor.url, settings.request_timeout_s)
        swapper = Swapper(settings, vllm, supervisor, metrics)  # before the child starts: it starts on the live version
        if supervisor is not None:
            await supervisor.start()
        await swapper.catch_up()
        control = ControlConsumer(settings.kafka_bootstrap, asyncio.get_running_loop(), swapper.on_control,
                                  swapper.verify, swapper.refused).start()
        gate = swapper.gate
        limits = RequestLimits(PromptCounter(settings.base_model), settings.max_prompt_tokens, settings.max_n,
                               settings.max_tokens_limit, settings.token_rate_limit)
        chat = ChatService(settings.model_name, vllm, gate, producer, settings.signing_key_bytes(),
                           is_ready=lambda: supervisor is None or supervisor.ready.is_set(), limits=limits,
                           metrics=metrics)
        metrics.watch(events=producer.counters.as_dict, version=lambda: gate.version,
                      vllm_state=lambda: supervisor.state if supervisor else "external", swaps=lambda: gate.swaps)
        st = app.state
        st.settings, st.producer, st.supervisor, st.gate, st.chat = settings, producer, supervisor, gate, chat
        st.feedback = feedback_api.FeedbackService(producer, settings.signing_key_bytes())
        st.started_at = time.time()
        log.info("gateway up: model %r via vLLM at %s", settings.model_name, vllm.base_url)
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
