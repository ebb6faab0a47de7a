"""Admin routes (admin API key only, see serving/guard.py): list, promote, roll back.

Promote and rollback publish the same tao.control event as `tao models promote|rollback`,
so every gateway replica swaps, this one included; the route then waits (up to
`wait_s`) until this gateway serves the new version and says how long the swap took.
"""
from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, field_validator

from feedback.registry import VERSION_NAME
from serving.deps import GateDep, SettingsDep
from serving.errors import OpenAIError
from serving.swap import SwapGate

router = APIRouter(prefix="/admin")


def version_error(param: str, value: str) -> str:
    return f'{param} must be a version name: "base" or v1, v2, ... (GET /admin/models lists them), got {value!r}'


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str | None = Field(None, description='version to go back to; default the live version\'s parent; "base"')
    reason: str = Field("rollback by an admin", max_length=500)

    @field_validator("to")
    @classmethod
    def _to(cls, v: str | None) -> str | None:
        if v is not None and not VERSION_NAME.fullmatch(v):
            raise ValueError(version_error("to", v))  # answered 400 naming the field (serving/errors.py)
        return v


@router.get("/models")
async def list_models(gate: GateDep, s: SettingsDep) -> dict:
    from feedback.registry import list_versions

    return {"live": gate.version, "versions": [v.model_dump(mode="json") for v in list_versions(s.data_dir)]}


async def _wait_live(gate: SwapGate, version: str, wait_s: float) -> dict:
    t0 = time.monotonic()
    while gate.version != version and time.monotonic() - t0 < wait_s:
        await asyncio.sleep(0.1)
    swapped = gate.version == version
    return {"version": version, "live": gate.version, "swapped": swapped,
            "swap_s": gate.last_swap_s if swapped else None}


@router.post("/models/{version}/promote")
async def promote(version: str, gate: GateDep, s: SettingsDep, wait_s: float = 120) -> dict:
    from feedback.registry import promote as publish

    if not VERSION_NAME.fullmatch(version):
        raise OpenAIError(400, version_error("version", version), "invalid_value", "version")
    try:
        await asyncio.to_thread(publish, s.kafka_bootstrap, s.data_dir, version, key=s.signing_key_bytes())
    except LookupError as e:
        raise OpenAIError(404, str(e), "version_not_found", "version") from e
    return await _wait_live(gate, version, wait_s)


@router.post("/rollback")
async def rollback(body: RollbackRequest, gate: GateDep, s: SettingsDep, wait_s: float = 120) -> dict:
    from feedback.registry import rollback as publish

    try:
        event = await asyncio.to_thread(publish, s.kafka_bootstrap, s.data_dir, gate.version, body.to,
                                        s.base_model, body.reason, key=s.signing_key_bytes())
    except LookupError as e:  # an unknown target, or nothing to roll back to
        raise OpenAIError(404, str(e), "version_not_found", "to") from e
    return await _wait_live(gate, event.payload.version, wait_s)
