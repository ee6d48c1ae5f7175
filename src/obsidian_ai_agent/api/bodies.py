"""The base of every JSON request body: a field the route does not know is a 422 naming it.

Silently dropping one hides a client's mistake (`{"grace": 0}` for `grace_seconds` kept the default).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """Subclass this for a request body; response models stay plain `BaseModel`s."""

    model_config = ConfigDict(extra="forbid")
