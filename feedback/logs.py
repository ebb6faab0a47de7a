"""One logging setup for every tao process (gateway, worker, collector, `tao up`)."""
from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Their per-request and per-connection INFO lines drown ours; their warnings still show.
QUIET = ("httpx", "kafka")


def setup_logging(level: int | str = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
