"""Prometheus metrics of the collector, read from its counters when scraped.

Served at the worker's GET /metrics, and by `tao collect` with TAO_COLLECTOR_METRICS_PORT.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from feedback.collector import CollectorCounters


class CollectorMetrics:
    """A prometheus_client custom collector over `CollectorCounters.stats()`."""

    def __init__(self, counters: CollectorCounters):
        self.counters = counters

    def collect(self):
        st = self.counters.stats()
        for name, help_ in (("consumed", "records read from Kafka, good or bad"),
                            ("stored", "rows inserted into DuckDB"),
                            ("duplicates", "valid events whose event_id was already stored")):
            c = CounterMetricFamily(f"tao_collector_records_{name}", help_)
            c.add_metric([], st[name])
            yield c
        dead = CounterMetricFamily("tao_collector_deadlettered", "records sent to the dead-letter topic",
                                   labels=["reason"])
        for reason, n in st["deadlettered_by_reason"].items():
            dead.add_metric([reason], n)
        yield dead
        rate = GaugeMetricFamily("tao_collector_rows_per_second", "rows stored per second, last 10 s")
        rate.add_metric([], st["rows_per_second"])
        yield rate
        position = GaugeMetricFamily("tao_collector_position", "next offset to read, as committed in DuckDB",
                                     labels=["topic", "partition"])
        end = GaugeMetricFamily("tao_collector_partition_end", "the partition's high watermark at the last fetch",
                                labels=["topic", "partition"])
        lag = GaugeMetricFamily("tao_collector_lag", "records in Kafka not yet in DuckDB",
                                labels=["topic", "partition"])
        for p in st["partitions"]:
            labels = [p["topic"], str(p["partition"])]
            position.add_metric(labels, p["position"])
            if p["end"] is not None:
                end.add_metric(labels, p["end"])
                lag.add_metric(labels, p["lag"])
        yield position
        yield end
        yield lag
        if st["last_commit"] is not None:
            last = GaugeMetricFamily("tao_collector_last_commit_timestamp_seconds",
                                     "Unix time of the last DuckDB transaction")
            last.add_metric([], st["last_commit"])
            yield last


def collector_registry(counters: CollectorCounters) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(CollectorMetrics(counters))
    return registry
