"""Console benchmark: how long each page takes with a large DuckDB behind it.

    make bench-console
    .venv/bin/python -m tests.bench.console --completions 100000 --repeats 15

A DuckDB file on disk gets `--completions` completions (five request shapes, three tenants,
three versions, spread over 7 days, ~30% with feedback) written through the Store as the
collector writes them, plus `--cycles` finished cycles (candidates, pairs, a report with the
gate's examples) and as many registered versions. The worker's console app is served by
uvicorn on 127.0.0.1 and every page is fetched `--repeats` times over HTTP with an admin key,
after one warm-up fetch. Reported per page: median, p95 and max of the whole request (query,
scrubbing, template, HTTP), target < 300 ms each (issue 17), with the CPU's flags and the
load average before the run: other processes on the machine slow every page alike.
Results: tests/bench/results/console.md (+ .json).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
TARGET_MS = 300.0
PAGES = ["traffic", "traffic?window=1440", "traffic?window=0", "completions", "completions?q=Question%2042",
         "completions?tenant=acme&version=v1", "feedback", "feedback?window=0", "models", "cycles", "cycles/{cycle}",
         "collector"]


def say(msg: str) -> None:
    print(f"[console {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build(data_dir: Path, completions: int, cycles: int):
    """The DuckDB file and the registry; returns (store, newest cycle id, feedback events)."""
    from feedback.registry import write_metadata
    from feedback.store import Store
    from schemas.registry import VersionMetadata
    from tests.trainer.console.fill import fill

    store = Store(data_dir / "tao.duckdb")
    t0 = time.monotonic()
    filled = fill(store, completions, minutes=7 * 24 * 60, seed=1)
    say(f"{completions} completions and {len(filled.feedback)} feedback stored in {time.monotonic() - t0:.0f}s")
    ids = [c.payload.completion_id for c in filled.completions[:200]]
    newest = None
    for k in range(cycles):
        cid = newest = f"c{k:04d}"
        examples = [{"prompt_id": ids[i], "verdict": "win", "current": "a" * 300, "candidate": "b" * 300,
                     "score_current": 0.5, "score_candidate": 0.8} for i in range(5)]
        report = {"status": "promoted", "version": f"v{k + 1}", "parent": f"v{k}" if k else "base",
                  "timings": {"select": 1, "explore": 300, "score": 2, "optimize": 120, "gate": 200, "total": 623},
                  "counts": {"prompts": 200, "pairs": 60},
                  "gate": {"promote": True, "reasons": ["passed"], "examples": examples, "wins": 9, "losses": 2,
                           "ties": 21, "win_interval": {"value": 0.82, "low": 0.52, "high": 0.95, "n": 11}}}
        store.execute("INSERT INTO cycles VALUES (?, now() - INTERVAL (? * 3600) SECOND, now(), 'promoted', NULL, NULL, "
                      "?, ?)", [cid, cycles - k, f"v{k + 1}", json.dumps(report)])
        store.execute("INSERT INTO cycle_candidates SELECT ?, ids[1 + (i % 200)], ['plain','scaffold','fewshot'][1 + i % 3], "
                      "'candidate text ' || i, (i % 10) / 10.0, NULL FROM range(1200) t(i), (SELECT ? AS ids)",
                      [cid, ids])
        store.execute("INSERT INTO cycle_pairs SELECT ?, ids[1 + i], '[{\"role\": \"user\", \"content\": \"q\"}]', 'good', "
                      "'bad', i / 60.0 FROM range(60) t(i), (SELECT ? AS ids)", [cid, ids])
        version_dir = data_dir / "models" / f"v{k + 1}"
        version_dir.mkdir(parents=True, exist_ok=True)
        write_metadata(version_dir, VersionMetadata(
            version=f"v{k + 1}", artifact_path=str(version_dir / "weights"), parent=f"v{k}" if k else "base",
            cycle_id=cid, counts=report["counts"], gate=report["gate"]))
    return store, newest, len(filled.feedback)


def serve(store, data_dir: Path):
    """The console app, as the worker mounts it, on uvicorn; returns (url, admin key, stop)."""
    import uvicorn
    from fastapi import FastAPI

    from feedback.auth import KeyRing, add_key
    from feedback.collector import CollectorCounters
    from feedback.procs import free_port
    from trainer import console
    from trainer.console.actions import ModelActions
    from trainer.console.auth import ConsoleAuth
    from trainer.console.data import ConsoleData

    key = add_key(data_dir / "api_keys", "root", admin=True)
    ring = KeyRing(data_dir / "api_keys")
    app = FastAPI()
    console.mount(app)
    app.state.console_auth = ConsoleAuth(ring, os.urandom(32), 3600)
    app.state.console_data = ConsoleData(store, data_dir, CollectorCounters().stats, tenant_names=ring.tenant_names)
    app.state.console_actions = ModelActions("127.0.0.1:9", data_dir, data_dir, b"k", store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    def stop():
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", key, stop


def measure(url: str, key: str, pages: list[str], repeats: int) -> list[dict]:
    import httpx

    out = []
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as http:
        for page in pages:
            assert http.get(f"/console/{page}").status_code == 200, page  # warm-up: templates compiled, cursors made
            ms = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                r = http.get(f"/console/{page}")
                ms.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, (page, r.status_code)
            ms.sort()
            row = {"page": page, "median_ms": round(statistics.median(ms), 1),
                   "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1), "max_ms": round(ms[-1], 1),
                   "bytes": len(r.content)}
            row["ok"] = row["p95_ms"] < TARGET_MS
            say(f"{page}: median {row['median_ms']} ms, p95 {row['p95_ms']} ms")
            out.append(row)
    return out


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "console.json").write_text(json.dumps(result, indent=2))
    rows = result["pages"]
    lines = ["# Console benchmark", "", f"Command: `{result['command']}`", "",
             f"Machine: {result['cores']} cores; CPU flags: {' '.join(result['cpu_flags']) or 'no AVX-512, no AMX'}; "
             f"load average before the run {result['load_before'][0]:.2f}.", "",
             f"DuckDB on local disk with {result['completions']} completions, {result['feedback']} feedback events, "
             f"{result['cycles']} cycles and versions. Each page fetched over HTTP {result['repeats']} times after a "
             f"warm-up, with an admin key; target: every page under {TARGET_MS:.0f} ms (p95 here).", "",
             "| page | median ms | p95 ms | max ms | KB | under target |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['page']} | {r['median_ms']} | {r['p95_ms']} | {r['max_ms']} | {r['bytes'] / 1024:.0f} | "
              f"{'yes' if r['ok'] else '**no**'} |" for r in rows]
    worst = max(rows, key=lambda r: r["p95_ms"])
    lines += ["", f"Slowest page: {worst['page']} at p95 {worst['p95_ms']} ms "
                  f"({'within' if worst['ok'] else 'OVER'} the {TARGET_MS:.0f} ms target)."]
    (out / "console.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    from feedback.hardware import cpu_flags

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--completions", type=int, default=100_000)
    p.add_argument("--cycles", type=int, default=30)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    command = "python -m tests.bench.console " + shlex.join(argv if argv is not None else sys.argv[1:])
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tao-console-bench-") as tmp:
        data_dir = Path(tmp)
        store, newest, n_feedback = build(data_dir, args.completions, args.cycles)
        url, key, stop = serve(store, data_dir)
        try:
            pages = [pg.format(cycle=newest) for pg in PAGES]
            rows = measure(url, key, pages, args.repeats)
        finally:
            stop()
            store.close()
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx")))
    result = {"command": command, "cores": os.cpu_count(), "cpu_flags": flags, "load_before": load,
              "completions": args.completions, "feedback": n_feedback, "cycles": args.cycles,
              "repeats": args.repeats, "pages": rows}
    write(result, args.out)
    say(f"results: {args.out / 'console.md'}")


if __name__ == "__main__":
    main()
