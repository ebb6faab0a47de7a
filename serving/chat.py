"""Chat completions: pass the request to vLLM, stamp id/model/version, log a ChatCompleted.

The response is the client's; the event is best-effort bookkeeping that must never slow
or fail it, so it goes to the producer's queue (which spills to disk if Kafka is away).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Annotated, Any

import aiohttp
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from feedback.ids import new_completion_id, tenant_of
from feedback.producer import EventProducer
from schemas.events import (
    MAX_ID_CHARS, MAX_TEXT_CHARS, MAX_TOOL_CALLS, MAX_TOOL_NAME_CHARS, TOPICS, ChatCompleted, ChatCompletedPayload,
    Choice, ToolCall, Usage,
)
from serving.errors import OpenAIError
from serving.limits import RequestLimits
from serving.metrics import GatewayMetrics
from serving.swap import SwapGate
from serving.vllm import VLLMClient, lines

log = logging.getLogger(__name__)
VERSION_HEADER = "x-tao-model-version"
# What a request to vLLM fails with when vLLM is away (refused, reset, timed out): a 503.
UPSTREAM_DOWN = (aiohttp.ClientError, asyncio.TimeoutError)


class ChatRequest(BaseModel):
    # Other OpenAI parameters (temperature, n, stop, ...) pass through to vLLM unchanged.
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False
    # OpenAI's bounds (16 pairs, keys 64 characters, values 512): the task tag must fit the
    # event schema (ChatCompletedPayload.task), or the answer's event could not be made.
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description='request tags; "task" becomes the task tag')


class ChatService:
    def __init__(self, model_name: str, vllm: VLLMClient, gate: SwapGate, producer: EventProducer,
                 signing_key: bytes, is_ready, limits: RequestLimits, metrics: GatewayMetrics):
        self.model_name = model_name
        self.limits = limits
        self.metrics = metrics
        self.vllm = vllm
        self.gate = gate
        self.producer = producer
        self.signing_key = signing_key
        self.is_ready = is_ready

    async def complete(self, req: ChatRequest, api_key: str | None):
        if req.model != self.model_name:
            raise OpenAIError(404, f"The model {req.model!r} does not exist; this service serves {self.model_name!r}",
                              "model_not_found", "model")
        body = req.model_dump(exclude_none=True)
        body.pop("metadata", None)
        await self.limits.check(body, tenant_of(api_key))
        if not self.is_ready():
            raise OpenAIError(503, "the model server is not ready yet; retry shortly", "model_not_ready",
                              headers={"Retry-After": "5"})
        tenant = tenant_of(api_key)
        cid = new_completion_id(self.signing_key, tenant)
        task = (req.metadata or {}).get("task")
        if req.stream:
            return await self._stream(req, body, tenant, cid, task)
        return await self._once(req, body, tenant, cid, task)

    async def _once(self, req, body, tenant, cid, task):
        lease = await self.gate.acquire()
        version, body["model"] = lease.version, lease.served
        t0 = time.monotonic()
        call = asyncio.ensure_future(self.vllm.chat(body))
        lease.on_revoke(call.cancel)  # a swap that waited the drain bound for this request ends it
        try:
            status, content = await call
        except UPSTREAM_DOWN as e:
            self.metrics.latency.labels("false", "503").observe(time.monotonic() - t0)
            raise OpenAIError(503, f"the model server is unavailable ({type(e).__name__}); retry shortly",
                              "model_unavailable", headers={"Retry-After": "2"}) from e
        except asyncio.CancelledError:
            if not lease.revoked.is_set() or asyncio.current_task().cancelling():
                raise  # the client went away: not ours to answer
            self.metrics.latency.labels("false", "503").observe(time.monotonic() - t0)
            raise OpenAIError(503, SWAPPED_MESSAGE, "model_swapped", headers={"Retry-After": "1"}) from None
        finally:
            await self.gate.release(lease)
        self.metrics.latency.labels("false", str(status)).observe(time.monotonic() - t0)
        if status != 200:
            return _passthrough_error(status, content)
        data = json.loads(content)
        self.metrics.observe_usage(data.get("usage"))
        data["id"], data["model"] = cid, self.model_name
        choices = [Choice(index=c["index"], text=(c.get("message") or {}).get("content") or "",
                          finish_reason=c.get("finish_reason"),
                          tool_calls=tool_calls((c.get("message") or {}).get("tool_calls")))
                   for c in data.get("choices", [])]
        self._log(req, body, tenant, cid, version, choices, data.get("usage"), t0, task)
        return JSONResponse(data, headers={VERSION_HEADER: version})

    async def _stream(self, req, body, tenant, cid, task):
        client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        lease = await self.gate.acquire()
        version, body["model"] = lease.version, lease.served
        t0 = time.monotonic()
        try:
            r = await self.vllm.chat_stream(body)
        except UPSTREAM_DOWN as e:
            await self.gate.release(lease)
            self.metrics.latency.labels("true", "503").observe(time.monotonic() - t0)
            raise OpenAIError(503, f"the model server is unavailable ({type(e).__name__}); retry shortly",
                              "model_unavailable", headers={"Retry-After": "2"}) from e
        if r.status != 200:
            try:
                content = await r.read()
            finally:
                r.release()
                await self.gate.release(lease)
            self.metrics.latency.labels("true", str(r.status)).observe(time.monotonic() - t0)
            return _passthrough_error(r.status, content)
        # Past the swap's drain bound (a client that stopped reading holds this lease) the swap
        # revokes it: closing vLLM's stream stops the generation and ends the loop below.
        lease.on_revoke(r.close)

        async def events():
            texts: dict[int, list[str]] = {}
            finish: dict[int, str | None] = {}
            calls: dict[int, StreamedToolCalls] = {}
            usage = None
            done = False
            try:
                async for line in _until_revoked(lines(r), lease):
                    if not line.startswith(b"data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done = True
                        yield "data: [DONE]\n\n"
                        continue
                    chunk = json.loads(payload)
                    chunk["id"], chunk["model"] = cid, self.model_name
                    for c in chunk.get("choices", []):
                        piece = (c.get("delta") or {}).get("content")
                        if piece and not texts:
                            self.metrics.ttft.observe(time.monotonic() - t0)
                        if piece:
                            texts.setdefault(c["index"], []).append(piece)
                        if (c.get("delta") or {}).get("tool_calls"):
                            calls.setdefault(c["index"], StreamedToolCalls()).add(c["delta"]["tool_calls"])
                        if c.get("finish_reason"):
                            finish[c["index"]] = c["finish_reason"]
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        if not chunk.get("choices") and not client_wants_usage:
                            continue  # the usage-only chunk we asked for ourselves
                        if not client_wants_usage:
                            chunk.pop("usage")
                    yield f"data: {json.dumps(chunk)}\n\n"
                if lease.revoked.is_set() and not done:
                    # OpenAI's way of failing a stream midway: clients (the openai SDK too) raise on it.
                    err = {"message": SWAPPED_MESSAGE, "type": "server_error", "code": "model_swapped", "param": None}
                    yield f"data: {json.dumps({'error': err})}\n\n"
            finally:
                if done:
                    r.release()
                else:  # closing (not pooling) a stream cut short tells vLLM to stop generating it
                    r.close()
                await self.gate.release(lease)
                status = "200" if done else "503" if lease.revoked.is_set() else "499"
                self.metrics.latency.labels("true", status).observe(time.monotonic() - t0)
                self.metrics.observe_usage(usage)
                if done:  # a client that hung up mid-stream got no answer to log
                    idx = sorted(set(texts) | set(finish) | set(calls))
                    choices = [Choice(index=i, text="".join(texts.get(i, [])), finish_reason=finish.get(i),
                                      tool_calls=calls[i].done() if i in calls else [])
                               for i in idx]
                    self._log(req, body, tenant, cid, version, choices, usage, t0, task)

        return StreamingResponse(events(), media_type="text/event-stream", headers={VERSION_HEADER: version})

    def _log(self, req, body, tenant, cid, version, choices, usage, t0, task) -> None:
        params = {k: v for k, v in body.items() if k not in ("messages", "model", "stream", "stream_options")}
        event = ChatCompleted(
            tenant=tenant,
            payload=ChatCompletedPayload(
                completion_id=cid, model_version=version, messages=req.messages, params=params, choices=choices,
                usage=Usage(**{k: v for k, v in (usage or {}).items() if k in Usage.model_fields}),
                latency_ms=(time.monotonic() - t0) * 1000, stream=req.stream, task=task,
            ),
        )
        self.producer.emit(TOPICS["completions"], event)


def _tool_call(call_id, name, arguments) -> ToolCall:
    # Clipped to the event's bounds: whatever the model wrote, its answer's event can be made
    # (a refused event would fail the request after its answer was ready).
    return ToolCall(id=str(call_id)[:MAX_ID_CHARS] if call_id else None, name=str(name or "")[:MAX_TOOL_NAME_CHARS],
                    arguments=str(arguments or "")[:MAX_TEXT_CHARS])


def tool_calls(raw: list[dict] | None) -> list[ToolCall]:
    """The tool calls of an OpenAI `message` (non-streaming answer), for the event."""
    out = []
    for c in (raw or [])[:MAX_TOOL_CALLS]:
        fn = c.get("function") or {}
        out.append(_tool_call(c.get("id"), fn.get("name"), fn.get("arguments")))
    return out


class StreamedToolCalls:
    """Tool calls of one choice put together from stream deltas: each delta names the call's
    `index`; the first one of a call carries its id and name, and `arguments` come in pieces."""

    def __init__(self):
        self._calls: dict[int, dict] = {}

    def add(self, deltas: list[dict]) -> None:
        for d in deltas:
            i = d.get("index", 0)
            if i not in self._calls and len(self._calls) >= MAX_TOOL_CALLS:
                continue
            call = self._calls.setdefault(i, {"id": None, "name": "", "arguments": []})
            fn = d.get("function") or {}
            call["id"] = call["id"] or d.get("id")
            call["name"] = call["name"] or fn.get("name") or ""
            if fn.get("arguments"):
                call["arguments"].append(fn["arguments"])

    def done(self) -> list[ToolCall]:
        return [_tool_call(c["id"], c["name"], "".join(c["arguments"])) for _, c in sorted(self._calls.items())]


SWAPPED_MESSAGE = ("a new model version went live while this request was still running past the swap's drain "
                   "bound (TAO_SWAP_DRAIN_TIMEOUT_S); it was ended: retry the request")


async def _until_revoked(chunks, lease):
    """The stream's lines until it ends or a swap revokes its lease (then vLLM's response
    is closed under it, which aiohttp reports as an error, or as an early end)."""
    try:
        async for line in chunks:
            if lease.revoked.is_set():
                return
            yield line
    except UPSTREAM_DOWN:
        if not lease.revoked.is_set():
            raise


def _passthrough_error(status: int, content: bytes):
    if status == 500 and b"EngineCore encountered an issue" in content:
        # vLLM's engine died under this request (EngineDeadError); its server exits and the
        # supervisor restarts it, so this is "unavailable, retry", not a fault of the request.
        raise OpenAIError(503, "the model server failed under this request and is restarting; retry shortly",
                          "model_unavailable", headers={"Retry-After": "5"})
    # vLLM's errors are already OpenAI-shaped; keep its message, fix the shape if not.
    try:
        data = json.loads(content)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return JSONResponse(data, status_code=status)
        message = data.get("message") or str(data)
    except (ValueError, AttributeError):
        message = content.decode(errors="replace")[:500]
    raise OpenAIError(status, message, "upstream_error")
