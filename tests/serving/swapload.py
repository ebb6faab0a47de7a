"""16 concurrent clients, half of them streaming, while the live model is swapped: the
check shared by the weights-mode and lora-mode tests."""
from __future__ import annotations

import json
import threading
import time

import httpx

from tests.serving.live import Gateway, promote, wait_live

PROMPT = [{"role": "user", "content": "Name three colours."}]


def ask(gw: Gateway, stream: bool, max_tokens: int = 12) -> tuple[int, str | None, str]:
    """(status, version header, answer) of one greedy request through the gateway."""
    body = {"model": "tao", "messages": PROMPT, "temperature": 0, "max_tokens": max_tokens, "stream": stream}
    url = gw.url
    with httpx.Client(timeout=120, headers={"authorization": f"Bearer {gw.key}"} if gw.key else None) as c:
        if not stream:
            r = c.post(url + "/v1/chat/completions", json=body)
            text = r.json()["choices"][0]["message"]["content"] if r.status_code == 200 else r.text
            return r.status_code, r.headers.get("x-tao-model-version"), text
        with c.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                return r.status_code, None, r.read().decode()
            parts = []
            for line in r.iter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    for ch in json.loads(line[5:])["choices"]:
                        parts.append((ch.get("delta") or {}).get("content") or "")
            return 200, r.headers.get("x-tao-model-version"), "".join(parts)


def expected_answers(gw: Gateway, bootstrap: str, versions: list[str]) -> dict[str, str]:
    """Each version's greedy answer, asked alone; they must differ, or the check below is blind."""
    out = {}
    for v in versions:
        promote(bootstrap, gw.data_dir, v)
        wait_live(gw, v)
        status, header, text = ask(gw, stream=False)
        assert status == 200 and header == v, (status, header, text)
        out[v] = text
    assert len(set(out.values())) == len(out), f"versions answer alike, the test cannot tell them apart: {out}"
    return out


def closest(text: str, expected: dict[str, str]) -> set[str]:
    """Versions whose expected answer shares the longest prefix with `text` (batching can
    change a late token of a greedy answer; the first ones tell the models apart)."""
    def prefix(a: str, b: str) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    scores = {v: prefix(text, e) for v, e in expected.items()}
    best = max(scores.values())
    return {v for v, s in scores.items() if s == best}


def swap_under_load(gw: Gateway, bootstrap: str, order: list[str], expected: dict[str, str],
                    clients: int = 16, settle_s: float = 1.0) -> dict:
    results: list[tuple[int, str | None, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def client(i: int) -> None:
        k = 0
        while not stop.is_set():
            try:
                results.append(ask(gw, stream=(i + k) % 2 == 0))
            except Exception as e:  # a transport error is a failed request too
                errors.append(f"{type(e).__name__}: {e}")
            k += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    swap_s = []

    def answered_by(version: str, timeout: float = 300) -> None:
        # Each version must answer some requests under load before the next swap; how long
        # that takes depends on how busy the machine is, so wait for it rather than sleep.
        deadline = time.monotonic() + timeout
        while sum(r[1] == version for r in list(results)) < 2:
            assert time.monotonic() < deadline and not errors, f"{version} answered nothing: {errors[:3]}"
            time.sleep(0.2)
        time.sleep(settle_s)

    try:
        answered_by(gw.readyz()["version"])
        for v in order:
            t0 = time.monotonic()
            promote(bootstrap, gw.data_dir, v)
            wait_live(gw, v)
            swap_s.append(time.monotonic() - t0)
            answered_by(v)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    failed = [r for r in results if r[0] != 200] + errors
    assert not failed, f"{len(failed)} failed requests, e.g. {failed[:3]}"
    wrong = [r for r in results if r[1] not in closest(r[2], expected)]
    assert not wrong, (f"{len(wrong)} of {len(results)} answers stamped with a version that did not produce them, "
                       f"e.g. {wrong[:3]}; expected answers {expected}")
    by_version = {v: sum(r[1] == v for r in results) for v in expected}
    assert all(by_version[v] > 0 for v in order), f"a version answered nothing under load: {by_version}"
    return {"requests": len(results), "by_version": by_version, "swap_s": swap_s}
