"""Small files written whole: a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str, *, durable: bool = False) -> None:
    """`text` at `path`, through a temporary file of this writer's own in the same directory and
    a rename: several processes may write the same directory at once. `durable`: fsync before
    the rename, for files a crash must not lose (the model registry's), at a few ms a write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, value: Any, *, durable: bool = False) -> None:
    """`value` as JSON at `path` (see write_text_atomic). The value is encoded before any file
    is made, so one that cannot be encoded leaves the old file and no temporary one."""
    write_text_atomic(path, json.dumps(value), durable=durable)
