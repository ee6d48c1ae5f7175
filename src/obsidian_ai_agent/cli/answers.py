"""Commands for answers; registered on the main `app`."""

from __future__ import annotations
