"""Hot swap without a failed request, in two modes.

`SwapGate` hands each request a `Lease`: the version that will answer it and the name to
ask vLLM for. Requests in flight are counted per vLLM model name.

- `weights` (in place): close the gate to new requests (they wait, they do not fail), wait
  for the in-flight ones to finish, reload vLLM's weights, open the gate. One model name.
- `lora`: load the new version's adapter under a versioned name (tao-vN) while requests
  keep flowing, flip the alias so new requests use it, then unload the old adapter once
  the requests still using it have finished. No pause at all.

Either way the version a response is stamped with is exactly the version that produced it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lease:
    version: str
    served: str  # the model name vLLM is asked for


class SwapGate:
    def __init__(self, version: str, artifact_path: str, served: str):
        self.version = version
        self.artifact_path = artifact_path
        self.served = served
        self.swaps = 0
        self.last_swap_s: float | None = None
        self._cond = asyncio.Condition()
        self._inflight: Counter[str] = Counter()
        self._swapping = False
        self._swap_lock = asyncio.Lock()

    @property
    def inflight(self) -> int:
        return sum(self._inflight.values())

    async def acquire(self) -> Lease:
        """Enter as a request; the lease says who answers it. Pair with release(lease)."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._swapping)
            self._inflight[self.served] += 1
            return Lease(self.version, self.served)

    async def release(self, lease: Lease) -> None:
        async with self._cond:
            self._inflight[lease.served] -= 1
            self._cond.notify_all()

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
            async with self._cond:
                self._swapping = True
                await self._cond.wait_for(lambda: self.inflight == 0)
            try:
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
        is an adapter in this mode, a zero one: see trainer/adapter.zero_adapter)."""
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
                async with self._cond:  # the old adapter goes once nobody is using it
                    await self._cond.wait_for(lambda: self._inflight[old] == 0)
                await unload(old)
            return True
