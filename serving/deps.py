"""Typed dependencies: how the gateway's routes reach what `create_app` and its lifespan built.

    @router.get("/healthz")
    async def healthz(gate: GateDep): ...

Only here is the untyped app.state read; a route names the service it needs by type.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from feedback.producer import EventProducer
from feedback.auth import KeyRing
from serving.chat import ChatService
from serving.metrics import GatewayMetrics
from serving.settings import GatewaySettings
from serving.swap import SwapGate
from serving.vllm import VLLMSupervisor


def settings(request: Request) -> GatewaySettings:
    return request.app.state.settings


def gate(request: Request) -> SwapGate:
    return request.app.state.gate


def chat_service(request: Request) -> ChatService:
    return request.app.state.chat


def producer(request: Request) -> EventProducer:
    return request.app.state.producer


def supervisor(request: Request) -> VLLMSupervisor | None:
    """The child vLLM's supervisor; None with an external vLLM (TAO_VLLM_URL)."""
    return request.app.state.supervisor


def keys(request: Request) -> KeyRing:
    return request.app.state.keys


def metrics(request: Request) -> GatewayMetrics:
    return request.app.state.metrics


def started_at(request: Request) -> float:
    """When the gateway started (epoch seconds): the `created` of its model card."""
    return request.app.state.started_at


SettingsDep = Annotated[GatewaySettings, Depends(settings)]
GateDep = Annotated[SwapGate, Depends(gate)]
ChatDep = Annotated[ChatService, Depends(chat_service)]
ProducerDep = Annotated[EventProducer, Depends(producer)]
SupervisorDep = Annotated[VLLMSupervisor | None, Depends(supervisor)]
KeysDep = Annotated[KeyRing, Depends(keys)]
MetricsDep = Annotated[GatewayMetrics, Depends(metrics)]
StartedAtDep = Annotated[float, Depends(started_at)]
