"""SwapGate's ordering rules, with the vLLM calls replaced by recorders (the real swaps
under load are in tests/serving/test_gateway_live.py)."""
import asyncio

from serving.swap import SwapGate


def run(coro):
    return asyncio.run(coro)


def test_weights_swap_waits_for_in_flight_requests_and_holds_new_ones():
    async def main():
        gate = SwapGate("base", "/m/base", "served")
        calls = []
        first = await gate.acquire()

        async def do_swap(path):
            calls.append(("reload", path, gate.inflight))

        swap = asyncio.create_task(gate.swap("v1", "/m/v1", do_swap))
        await asyncio.sleep(0.05)
        assert calls == [], "no reload while a request is in flight"
        late = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0.05)
        assert not late.done(), "a request arriving during a swap waits"
        await gate.release(first)
        assert await swap is True
        lease = await late
        assert calls == [("reload", "/m/v1", 0)]
        assert (first.version, lease.version) == ("base", "v1")
        assert lease.served == "served"
        assert await gate.swap("v1", "/m/v1", do_swap) is False  # already live: nothing happens
        assert gate.swaps == 1

    run(main())


def test_lora_swap_never_pauses_and_unloads_the_old_adapter_after_its_requests():
    async def main():
        gate = SwapGate("base", "/a/zero", "tao-base")
        calls = []

        async def load(name, path):
            calls.append(("load", name, path))

        async def unload(name):
            calls.append(("unload", name))

        assert await gate.swap_lora("v1", "/a/v1", load, unload)
        on_v1 = await gate.acquire()
        assert (on_v1.version, on_v1.served) == ("v1", "tao-v1")
        assert calls == [("load", "tao-v1", "/a/v1"), ("unload", "tao-base")]

        swap = asyncio.create_task(gate.swap_lora("v2", "/a/v2", load, unload))
        await asyncio.sleep(0.05)
        during = await asyncio.wait_for(gate.acquire(), 1)  # no pause: admitted at once
        assert (during.version, during.served) == ("v2", "tao-v2")
        assert ("unload", "tao-v1") not in calls, "v1 still has a request in flight"
        await gate.release(on_v1)
        await asyncio.wait_for(swap, 1)
        assert calls[-1] == ("unload", "tao-v1")

        back = asyncio.create_task(gate.swap_lora("base", "/a/zero", load, unload))  # rollback to the base
        await asyncio.sleep(0.05)
        lease = await asyncio.wait_for(gate.acquire(), 1)
        assert (lease.version, lease.served) == ("base", "tao-base")
        assert calls[-1] == ("load", "tao-base", "/a/zero")
        await gate.release(during)
        assert await asyncio.wait_for(back, 1)
        await gate.release(lease)
        assert calls[-1] == ("unload", "tao-v2")
        assert gate.swaps == 3
        assert not await gate.swap_lora("base", "/a/zero", load, unload)  # already live

    run(main())


def test_a_failed_weights_swap_reopens_the_gate_on_the_old_version():
    async def main():
        gate = SwapGate("base", "/m/base", "served")

        async def broken(path):
            raise RuntimeError("reload failed")

        try:
            await gate.swap("v1", "/m/v1", broken)
        except RuntimeError:
            pass
        lease = await asyncio.wait_for(gate.acquire(), 1)
        assert lease.version == "base" and gate.swaps == 0

    run(main())
