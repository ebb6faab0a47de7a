"""The base model the tests and benchmarks use: built by `make setup`, or TAO_BASE_MODEL."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

BASE_MODEL = Path(os.environ.get("TAO_BASE_MODEL", Path.home() / ".cache/tao-loop/models/SmolLM2-135M-Instruct"))


def require_base_model() -> Path:
    """Skip the calling test when the model has not been built."""
    if not (BASE_MODEL / "config.json").exists():
        pytest.skip(f"no base model at {BASE_MODEL}: run `make setup` or set TAO_BASE_MODEL")
    return BASE_MODEL
