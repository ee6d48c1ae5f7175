"""/api/keys: create, list, rotate and revoke API keys (admin). A key is shown once, when it is made."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ..security import keys
from .bodies import RequestBody
from .deps import EngineDep, SettingsDep, require, run_sync
from .errors import ERROR_RESPONSES, ApiError, ErrorResponse

router = APIRouter(tags=["keys"], responses=ERROR_RESPONSES, dependencies=[require("admin")])
NO_KEY: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No key with this id (`GET /api/keys` lists them)"}
}


class KeyInfo(BaseModel):
    id: str
    name: str
    scopes: list[str]
    created_at: float
    last_used_at: float | None
    expires_at: float | None = Field(description="Set once rotated: the key works until then.")
    revoked_at: float | None
    replaced_by: str | None
    lineage: str = Field(
        description="The first key of this key's rotation chain: every live secret of one key shares it, "
        "and revoking any of them revokes them all."
    )
    active: bool


class NewKeyInfo(KeyInfo):
    key: str = Field(description="The key itself. It is shown only now: store it.")


class KeyList(BaseModel):
    keys: list[KeyInfo]


class CreateKey(RequestBody):
    name: str = Field(min_length=1, max_length=100, description="Who or what uses the key.")
    scopes: list[str] = Field(min_length=1, max_length=3, description="Any of read, write, admin.")


class RotateKey(RequestBody):
    grace_seconds: float | None = Field(
        default=None,
        ge=0,
        le=30 * 86400,
        description="How long the old key keeps working (default: settings).",
    )


def _call(fn: Any) -> Any:
    try:
        return fn()
    except keys.UnknownKey as e:
        raise ApiError(404, str(e)) from None
    except ValueError as e:
        raise ApiError(400, str(e)) from None


@router.post("/api/keys", response_model=NewKeyInfo, status_code=201)
async def create_key(body: CreateKey, engine: EngineDep) -> dict[str, Any]:
    """Make a key with these scopes; the response is the only time the key is shown."""
    new = await run_sync(lambda: _call(lambda: keys.create_key(engine.store, body.name, body.scopes)))
    return new.to_dict()


@router.get("/api/keys", response_model=KeyList)
async def list_keys(engine: EngineDep) -> dict[str, Any]:
    """Every key with its scopes and state; never the key itself."""
    rows = await run_sync(lambda: keys.list_keys(engine.store))
    return {"keys": [r.to_dict() for r in rows]}


@router.post("/api/keys/{key_id}/rotate", response_model=NewKeyInfo, status_code=201, responses=NO_KEY)
async def rotate_key(
    key_id: str, engine: EngineDep, settings: SettingsDep, body: RotateKey | None = None
) -> dict[str, Any]:
    """A replacement key; the old one keeps working for the grace period, then stops."""
    grace = settings.server.auth.rotation_grace
    if body is not None and body.grace_seconds is not None:
        grace = body.grace_seconds
    new = await run_sync(lambda: _call(lambda: keys.rotate_key(engine.store, key_id, grace)))
    return new.to_dict()


@router.delete("/api/keys/{key_id}", response_model=KeyInfo, responses=NO_KEY)
async def revoke_key(key_id: str, engine: EngineDep) -> dict[str, Any]:
    """Revoke at once, in every worker."""
    row = await run_sync(lambda: _call(lambda: keys.revoke_key(engine.store, key_id)))
    return row.to_dict()
