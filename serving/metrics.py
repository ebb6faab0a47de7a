"""Prometheus metrics of one gateway process, served at GET /metrics.

One registry per app (not the global one): tests build several apps in one process.
Event-delivery counters and the live version are read when scraped, from the objects
that own them, so there is one source of truth for each number.
"""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# Seconds; a 135M model on a CPU answers in 0.1-10 s, a large one on a GPU in 0.05-60 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SWAP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


class _Live:
    """Values owned elsewhere, read at scrape time."""

    def __init__(self, events: Callable[[], dict], version: Callable[[], str], vllm_state: Callable[[], str],
                 swaps: Callable[[], int]):
        self.events, self.version, self.vllm_state, self.swaps = events, version, vllm_state, swaps

    def collect(self):
        ev = CounterMetricFamily("tao_events", "events by delivery state (queued, sent, spilled, replayed, "
                                 "dropped)", labels=["state"])
        for state, n in self.events().items():
            if isinstance(n, (int, float)):
                ev.add_metric([state], n)
        yield ev
        live = GaugeMetricFamily("tao_model_version_info", "the model version being served (value 1)",
                                 labels=["version"])
        live.add_metric([self.version()], 1)
        yield live
        vllm = GaugeMetricFamily("tao_vllm_up", "1 when the model server is ready", labels=["state"])
        state = self.vllm_state()
        vllm.add_metric([state], 1 if state in ("ready", "external") else 0)
        yield vllm
        sw = CounterMetricFamily("tao_swaps", "completed model swaps")
        sw.add_metric([], self.swaps())
        yield sw


class GatewayMetrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram("tao_request_latency_seconds", "chat completion latency, to the last byte",
                                 ["stream", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tao_time_to_first_token_seconds", "streamed chat: time to the first content chunk",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("tao_tokens", "tokens in prompts (in) and answers (out)", ["direction"], registry=r)
        self.rejected = Counter("tao_requests_rejected", "requests refused before the model", ["reason"],
                                registry=r)
        self.control_refused = Counter("tao_control_refused", "tao.control events not applied (unsigned, "
                                       "bad_signature, path_outside, unreadable)", ["reason"], registry=r)
        self.swap_seconds = Histogram("tao_swap_duration_seconds", "model swap, gate closed to open",
                                      ["mode"], buckets=SWAP_BUCKETS, registry=r)

    def watch(self, **live: Callable) -> None:
        """Read these at scrape time (again after an app restart: the old objects are gone)."""
        if getattr(self, "_live", None) is not None:
            self.registry.unregister(self._live)
        self._live = _Live(**live)
        self.registry.register(self._live)

    def observe_usage(self, usage: dict | None) -> None:
        if usage:
            self.tokens.labels("in").inc(usage.get("prompt_tokens") or 0)
            self.tokens.labels("out").inc(usage.get("completion_tokens") or 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
