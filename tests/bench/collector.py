"""Collector benchmark: how fast do events get into DuckDB, and how fresh are they there?

    make bench-collector
    .venv/bin/python -m tests.bench.collector --events 60000 --rounds 2 --rate 1000 --seconds 30

1. Throughput. `--events` events (70% completions, 30% feedback, the gateway's real event
   shapes) are produced to a fresh Tansu broker. Then, alternating `--rounds` times so
   drift on a shared machine hits both alike, the same topics are read from the start
   (a) by a bare kafka-python consumer that only touches each record: the raw consume
   rate, the limit; and (b) by the collector into a fresh DuckDB file on disk: parse,
   validate, dedupe, insert, positions, one transaction per poll (on its writer thread),
   timed until the last batch is stored. Reported: events/s of each and their ratio
   (target >= 0.6, goal 0.7: issue 18), and one more run with timers around each step.
2. Freshness. The collector runs (as in the worker, a thread) while another process emits
   completions through the gateway's own EventProducer at a steady `--rate` per second for
   `--seconds`; a reader polls DuckDB every 10 ms for new rows. Produce-to-queryable
   latency = when a row is first seen minus the event's occurred_at (set when the event
   is built, just before emit). Reported: p50 / p99 / max (target p99 < 1 s at 1,000/s).
Results: tests/bench/results/collector.md (+ .json, + collector.png), with the CPU's AVX-512
flags and the load average before the run (other processes on the machine skew both sides).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tests.bench.plot import pyplot

RESULTS = Path(__file__).parent / "results"


def say(msg: str) -> None:
    print(f"[collector {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def completion(i: int):
    """A ChatCompleted of a realistic size (~1 KB): a system and user message, one answer."""
    from schemas.events import ChatCompleted, ChatCompletedPayload, Choice

    return ChatCompleted(tenant=f"key{i % 7}", payload=ChatCompletedPayload(
        completion_id=f"cmpl-{uuid.uuid4().hex}", model_version="v3", task="json",
        messages=[{"role": "system", "content": "You are a helpful assistant. Answer in JSON."},
                  {"role": "user", "content": f"Extract name, city and age from: 'I am user {i}, 34, "
                                              f"living in Lyon since {1990 + i % 30}.'"}],
        params={"temperature": 0.7, "max_tokens": 128},
        choices=[Choice(index=0, text='{"name": "user %d", "city": "Lyon", "age": 34}' % i, finish_reason="stop")],
        usage={"prompt_tokens": 48, "completion_tokens": 20}, latency_ms=812.5,
    ))


def feedback(completion_id: str, i: int):
    from schemas.events import FeedbackSubmitted, FeedbackSubmittedPayload

    kind, value = [("thumbs", "up"), ("rating", 4), ("correction", '{"name": "u", "city": "Lyon", "age": 34}')][i % 3]
    return FeedbackSubmitted(payload=FeedbackSubmittedPayload(
        feedback_id=uuid.uuid4().hex, completion_id=completion_id, kind=kind, value=value))


def produce_backlog(bootstrap: str, n: int) -> None:
    from kafka import KafkaProducer

    from feedback.kafka import KAFKA_API_VERSION
    from schemas.events import TOPICS

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=256 * 1024,
                             api_version=KAFKA_API_VERSION)
    last = None
    try:
        for i in range(n):
            if i % 10 < 7 or last is None:
                ev = completion(i)
                last = ev.payload.completion_id
                producer.send(TOPICS["completions"], key=ev.key, value=ev.to_bytes())
            else:
                ev = feedback(last, i)
                producer.send(TOPICS["feedback"], key=ev.key, value=ev.to_bytes())
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)


def raw_consume(bootstrap: str, n: int) -> float:
    """Seconds for a bare consumer to read n records from the start (connect excluded)."""
    from kafka import KafkaConsumer, TopicPartition

    from feedback.collector import COLLECTED_TOPICS
    from feedback.kafka import KAFKA_API_VERSION

    # The same fetch settings as the collector's consumer, so only the work per record differs.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             api_version=KAFKA_API_VERSION, max_partition_fetch_bytes=4 * 1024 * 1024,
                             fetch_max_bytes=64 * 1024 * 1024)
    try:
        tps = [TopicPartition(t, p) for t in COLLECTED_TOPICS for p in sorted(consumer.partitions_for_topic(t))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        seen = 0
        nbytes = 0
        t0 = time.perf_counter()
        while seen < n:
            for records in consumer.poll(timeout_ms=500, max_records=2000).values():
                for rec in records:
                    nbytes += len(rec.value)
                seen += len(records)
        return time.perf_counter() - t0
    finally:
        consumer.close()


def collector_consume(bootstrap: str, n: int, db: Path, max_poll_records: int) -> tuple[float, int]:
    """Seconds for the collector to store n records into a fresh DuckDB file; rows stored."""
    from feedback.collector import Collector
    from feedback.store import Store

    store = Store(db)
    try:
        c = Collector(bootstrap, store, max_poll_records=max_poll_records)
        c.poll_once(0)  # connect and seek first: the raw consumer's connect is not timed either
        t0 = time.perf_counter()
        read = 0
        while read < n:
            read += c.poll_once(500)
        c.drain()  # until the last batch is stored, not only read
        seconds = time.perf_counter() - t0
        c.stop()
        return seconds, c.counters.as_dict()["stored"]
    finally:
        store.close()


# The steps timed by step_costs, by the thread they run on: (thread, label) -> where.
READER, WRITER = "collector thread", "writer thread"


def step_costs(bootstrap: str, n: int, db: Path, max_poll_records: int) -> dict[str, dict[str, float]]:
    """Microseconds per event of each step of the collector, per thread, from timers put
    around them for one more collector run (so slightly slower than the timed rounds). The
    two threads overlap: the collector thread's steps add up to the total, the writer's to
    its busy time, and the rest of the total it waits for the next batch."""
    from contextlib import ExitStack
    from unittest import mock

    import feedback.collector as collector_mod
    import feedback.store as store_mod

    spent: dict[str, float] = {}  # each key is written by one thread only

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    patched = {"validate (msgspec, pydantic where it refuses)": (collector_mod, "parse_event_fast"),
               "columns for Arrow": (store_mod, "_columns_by_table"),
               "Arrow tables (columns included)": (store_mod, "_tables"),
               "DuckDB transaction": (store_mod.Store, "_write")}
    with ExitStack() as patches:
        for name, (owner, attr) in patched.items():
            patches.enter_context(mock.patch.object(owner, attr, timed(name, getattr(owner, attr))))
        store = store_mod.Store(db)
        try:
            c = collector_mod.Collector(bootstrap, store, max_poll_records=max_poll_records)
            c.poll_once(0)
            c._consumer.poll = timed("Kafka fetch and decode (poll)", c._consumer.poll)
            c._writer.put = timed("waiting for the writer (queue full)", c._writer.put)
            c._writer._write = timed("writer busy", c._writer._write)
            t0 = time.perf_counter()
            read = 0
            while read < n:
                read += c.poll_once(500)
            c.drain()
            total = time.perf_counter() - t0
            c.stop()
        finally:
            store.close()
    us = {name: v / n * 1e6 for name, v in spent.items()}
    reader_steps = ("Kafka fetch and decode (poll)", "validate (msgspec, pydantic where it refuses)",
                    "waiting for the writer (queue full)")
    reader = {name: us.get(name, 0.0) for name in reader_steps}
    reader["the rest (loop, dead letters, counters, last drain)"] = total / n * 1e6 - sum(reader.values())
    columns = us.get("columns for Arrow", 0.0)
    writer = {"columns for Arrow": columns,
              "Arrow tables": us.get("Arrow tables (columns included)", 0.0) - columns,
              "DuckDB transaction": us.get("DuckDB transaction", 0.0)}
    writer["the rest (counters, handing over)"] = us.get("writer busy", 0.0) - sum(writer.values())
    writer["busy (of the total)"] = us.get("writer busy", 0.0)
    return {READER: reader, WRITER: writer, "total": {"wall time": total / n * 1e6}}


def steady_emit(bootstrap: str, rate: float, seconds: float, spill_dir: str) -> None:
    """Child process: emit `rate` completions per second through the gateway's EventProducer."""
    from feedback.producer import EventProducer
    from schemas.events import TOPICS

    producer = EventProducer(bootstrap, Path(spill_dir), client_id="bench").start()
    tick = 0.01
    per_tick = rate * tick
    due = 0.0
    t0 = time.monotonic()
    i = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due += per_tick
        while due >= 1:
            producer.emit(TOPICS["completions"], completion(i))  # occurred_at = now
            i += 1
            due -= 1
        time.sleep(max(0.0, t0 + (elapsed // tick + 1) * tick - time.monotonic()))
    producer.close()
    print(json.dumps({"emitted": i, **producer.counters.as_dict()}), flush=True)


def freshness(bootstrap: str, db: Path, rate: float, seconds: float, max_poll_records: int) -> dict:
    from feedback.collector import Collector
    from feedback.store import Store

    store = Store(db)
    c = Collector(bootstrap, store, max_poll_records=max_poll_records)
    c.poll_once(0)
    while c.poll_once(200):  # drain anything already there
        pass
    start_rowid = store.query("SELECT coalesce(max(rowid), -1) FROM completions")[0][0]
    c.start()
    latencies: list[float] = []
    stop = threading.Event()

    def watch():
        last = start_rowid
        while not stop.is_set():
            rows = store.query("SELECT rowid, epoch_us(occurred_at) FROM completions WHERE rowid > ?", [last])
            now = time.time()
            for rowid, occurred_us in rows:
                latencies.append(now - occurred_us / 1e6)
                last = max(last, rowid)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with tempfile.TemporaryDirectory() as spill:
        child = subprocess.run([sys.executable, "-m", "tests.bench.collector", "--emit", bootstrap, str(rate),
                                str(seconds), spill], capture_output=True, text=True, timeout=seconds + 120)
    if child.returncode != 0:
        raise RuntimeError(f"emitter failed: {child.stderr[-2000:]}")
    emitted = json.loads(child.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 30
    while len(latencies) < emitted["emitted"] and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    watcher.join(5)
    stats = c.counters.stats()
    c.stop()
    store.close()
    lat = sorted(latencies)
    return {"rate": rate, "seconds": seconds, "emitted": emitted, "seen": len(lat),
            "p50_s": _q(lat, 0.5), "p99_s": _q(lat, 0.99), "max_s": lat[-1] if lat else None,
            "mean_s": statistics.fmean(lat) if lat else None, "latencies": lat,
            "collector": {k: stats[k] for k in ("consumed", "stored", "duplicates", "deadlettered")}}


def _q(xs: list[float], q: float) -> float | None:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def chart(result: dict, path: Path) -> None:
    plt = pyplot(say)
    if plt is None:
        return

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    rounds = result["throughput"]["rounds"]
    xs = range(len(rounds))
    a.bar([x - 0.2 for x in xs], [r["raw_eps"] for r in rounds], 0.4, label="raw consume (the limit)")
    a.bar([x + 0.2 for x in xs], [r["collector_eps"] for r in rounds], 0.4, label="collector into DuckDB")
    a.set_xticks(list(xs), [f"round {i + 1}" for i in xs])
    a.set_ylabel("events / s")
    a.set_title(f"Throughput, {result['events']} events (ratio {result['throughput']['ratio']:.2f})")
    a.legend()
    lat = result["freshness"]["latencies"]
    b.plot(sorted(lat), [i / len(lat) for i in range(len(lat))])
    b.axvline(1.0, color="red", linestyle="--", label="target p99 < 1 s")
    b.set_xlabel("produce-to-queryable latency (s)")
    b.set_ylabel("fraction of events")
    b.set_title(f"Freshness at {result['freshness']['rate']:.0f} events/s")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def report(result: dict, argv: list[str]) -> str:
    t = result["throughput"]
    f = result["freshness"]
    steps = result["step_costs_us"]
    load = result["load_before"]
    busy = (f"other processes were using the CPU (load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} "
            f"over 1 / 5 / 15 min before the run, on {result['cores']} cores): both sides are slowed, the "
            "ratio less than the rates" if load[0] > 0.5 else "nothing else running")
    lines = [
        "# Collector benchmark",
        "",
        f"Command: `.venv/bin/python -m tests.bench.collector {shlex.join(argv)}` (or `make bench-collector`).",
        f"Measured {result['date']} on {result['machine']} ({result['cpu']}; AVX-512 flags: "
        f"{' '.join(result['cpu_flags']) or 'none'}); Tansu (memory) and DuckDB on local disk, one process each "
        f"side; {busy}.",
        "",
        "## Throughput: collector vs raw consume of the same topics, same run",
        "",
        "| round | raw consume (events/s) | collector into DuckDB (events/s) | ratio |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(t["rounds"]):
        lines.append(f"| {i + 1} | {r['raw_eps']:,.0f} | {r['collector_eps']:,.0f} | {r['ratio']:.2f} |")
    verdict = "met" if t["ratio"] >= 0.6 else "NOT met"
    lines += [
        f"| **median** | {t['raw_eps']:,.0f} | {t['collector_eps']:,.0f} | **{t['ratio']:.2f}** |",
        "",
        f"Target: ratio >= 0.6 -> {verdict} (goal 0.7 -> {'met' if t['ratio'] >= 0.7 else 'not met'}). "
        f"{result['events']} events (70% completions of ~1 KB, 30% feedback), "
        f"TAO_COLLECTOR_MAX_POLL_RECORDS={result['max_poll_records']}; the collector is timed until its last "
        "batch is stored.",
        "",
        "Where a collector's time goes (one more run with timers around each step; the raw "
        f"consumer takes {1e6 / t['raw_eps']:.1f} us an event). The two threads overlap: the collector "
        "thread's steps add up to the wall time, the writer thread's to its busy time:",
        "",
        "| thread | step | us / event |",
        "|---|---|---|",
        *[f"| {thread} | {name} | {us:.1f} |" for thread, named in steps.items() for name, us in named.items()],
        "",
        f"## Freshness at a steady {f['rate']:.0f} events/s for {f['seconds']:.0f} s",
        "",
        "| events seen | p50 | p99 | max | mean |",
        "|---|---|---|---|---|",
        f"| {f['seen']} of {f['emitted']['emitted']} | {f['p50_s'] * 1000:.0f} ms | {f['p99_s'] * 1000:.0f} ms | "
        f"{f['max_s'] * 1000:.0f} ms | {f['mean_s'] * 1000:.0f} ms |",
        "",
        f"Target: p99 < 1 s -> {'met' if f['p99_s'] < 1 else 'NOT met'}. Latency = first seen by a reader "
        "polling DuckDB every 10 ms (so up to 10 ms of it is the poll) minus occurred_at, set when the "
        "event is built in the emitting process, just before the gateway's EventProducer queues it: "
        "producer queue and batching, broker, fetch, parse, insert, commit.",
        "",
        "![throughput and freshness](collector.png)",
        "",
    ]
    return "\n".join(lines)


def cpu_flags() -> list[str]:
    """The CPU's AVX-512 flags (`grep -o 'avx512[a-z_]*' /proc/cpuinfo | sort -u`)."""
    import re

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(set(re.findall(r"avx512[a-z_]*", text)))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--emit":
        steady_emit(argv[1], float(argv[2]), float(argv[3]), argv[4])
        return {}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000, help="events in the throughput backlog")
    ap.add_argument("--rounds", type=int, default=2, help="raw / collector alternations")
    ap.add_argument("--rate", type=float, default=1000, help="events per second in the freshness run")
    ap.add_argument("--seconds", type=float, default=30, help="length of the freshness run")
    ap.add_argument("--max-poll-records", type=int, default=None, help="default: TAO_COLLECTOR_MAX_POLL_RECORDS")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where collector.md/.json/.png go")
    args = ap.parse_args(argv)

    import platform

    from deploy.broker import running_tansu
    from feedback.settings import CollectorSettings

    mpr = args.max_poll_records or CollectorSettings().collector_max_poll_records
    import os

    result: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "events": args.events,
                    "max_poll_records": mpr, "cores": os.cpu_count(),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores", "cpu": cpu_model(),
                    "cpu_flags": cpu_flags(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp, running_tansu(str(Path(tmp) / "tansu.log")) as bootstrap:
        say(f"producing {args.events} events to {bootstrap} ...")
        produce_backlog(bootstrap, args.events)
        rounds = []
        for r in range(args.rounds):
            raw_s = raw_consume(bootstrap, args.events)
            db = Path(tmp) / f"round{r}.duckdb"
            col_s, stored = collector_consume(bootstrap, args.events, db, mpr)
            assert stored == args.events, f"collector stored {stored} of {args.events}"
            rounds.append({"raw_s": raw_s, "collector_s": col_s, "raw_eps": args.events / raw_s,
                           "collector_eps": args.events / col_s, "ratio": raw_s / col_s})
            say(f"round {r + 1}: raw {args.events / raw_s:,.0f}/s, collector {args.events / col_s:,.0f}/s, "
                f"ratio {raw_s / col_s:.2f}")
            db.unlink()
        result["step_costs_us"] = step_costs(bootstrap, args.events, Path(tmp) / "steps.duckdb", mpr)
        result["throughput"] = {
            "rounds": rounds, "raw_eps": statistics.median(x["raw_eps"] for x in rounds),
            "collector_eps": statistics.median(x["collector_eps"] for x in rounds),
            "ratio": statistics.median(x["ratio"] for x in rounds)}
        say(f"freshness: {args.rate:.0f} events/s for {args.seconds:.0f}s ...")
        result["freshness"] = freshness(bootstrap, Path(tmp) / "fresh.duckdb", args.rate, args.seconds, mpr)
        f = result["freshness"]
        say(f"freshness: {f['seen']} seen, p50 {f['p50_s'] * 1000:.0f} ms, p99 {f['p99_s'] * 1000:.0f} ms")
    args.out.mkdir(parents=True, exist_ok=True)
    chart(result, args.out / "collector.png")
    (args.out / "collector.md").write_text(report(result, argv))
    slim = {**result, "freshness": {k: v for k, v in result["freshness"].items() if k != "latencies"}}
    (args.out / "collector.json").write_text(json.dumps(slim, indent=2))
    say(f"wrote {args.out / 'collector.md'}")
    return result


if __name__ == "__main__":
    main()
