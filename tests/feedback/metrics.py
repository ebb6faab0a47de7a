"""Reading Prometheus text in tests."""
from __future__ import annotations

import httpx


def metrics_at(url: str) -> dict[str, float]:
    return metrics_text(httpx.get(url + "/metrics", timeout=5).text)


def metrics_text(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}
