"""Hot swap without a failed request.

`SwapGate` counts requests in flight. A swap closes the gate to new requests (they wait,
they do not fail), waits for the in-flight ones to finish, swaps vLLM's weights in place,
then opens the gate. So the version a response is stamped with is exactly the version
that produced it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class SwapGate:
    def __init__(self, version: str, artifact_path: str):
        self.version = version
        self.artifact_path = artifact_path
        self.swaps = 0
        self.last_swap_s: float | None = None
        self._cond = asyncio.Condition()
        self._inflight = 0
        self._swapping = False
        self._swap_lock = asyncio.Lock()

    async def acquire(self) -> str:
        """Enter as a request; returns the version that will answer it. Pair with release()."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._swapping)
            self._inflight += 1
            return self.version

    async def release(self) -> None:
        async with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    async def swap(self, version: str, artifact_path: str, do_swap: Callable[[str], Awaitable[None]]) -> bool:
        """Swap to `version`; returns False (and changes nothing) if it is already live."""
        async with self._swap_lock:
            if version == self.version and artifact_path == self.artifact_path:
                return False
            t0 = time.monotonic()
            async with self._cond:
                self._swapping = True
                await self._cond.wait_for(lambda: self._inflight == 0)
            try:
                await do_swap(artifact_path)
                self.version, self.artifact_path = version, artifact_path
                self.swaps += 1
                self.last_swap_s = time.monotonic() - t0
                log.info("now serving %s (%s) after a %.2fs swap", version, artifact_path, self.last_swap_s)
                return True
            finally:
                async with self._cond:
                    self._swapping = False
                    self._cond.notify_all()
