"""Run the gateway: `tao gateway` (or `python -m serving.main`). Settings: TAO_* (serving/settings.py)."""
from __future__ import annotations

from feedback.logs import setup_logging
from serving.settings import GatewaySettings


def main(settings: GatewaySettings) -> None:
    import uvicorn

    from serving.app import create_app

    setup_logging()
    # No access log: a line per request cost about 3% of the gateway's CPU, which on a shared
    # machine is taken from vLLM; tao_request_latency_seconds counts requests by status.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                access_log=False, timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main(GatewaySettings())
