"""Collector settings (environment variables prefixed TAO_), shared by `tao collect` and the worker.

The worker runs the collector as a thread, so WorkerSettings extends this class; `tao collect`
runs it alone (for a rebuild, or to keep DuckDB filling while no worker runs).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from feedback.kafka import Bootstrap


class CollectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAO_", extra="ignore")

    kafka_bootstrap: Bootstrap = Field("127.0.0.1:9092", description="Kafka bootstrap servers, host:port[,host:port]")
    data_dir: Path = Field(Path(".tao-data"), description="DuckDB file, snapshots, cycles, model versions")
    event_retention_days: float = Field(
        30, gt=0, description="how long Kafka keeps raw events (retention.ms of the topics tao creates); "
                              "`tao collect --rebuild` can restore only what is still there")
    collector_max_poll_records: int = Field(
        2000, ge=1, description="records per poll, written to DuckDB in one transaction")
    collector_metrics_port: int = Field(
        0, ge=0, le=65535, description="`tao collect` only: serve Prometheus /metrics on this port (0 = off); "
                                       "the worker serves them on its own port")

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tao.duckdb"
