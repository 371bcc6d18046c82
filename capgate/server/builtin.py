"""Workers that run inside the server process unless the operator turns them off."""

from __future__ import annotations

from capgate.server.app import Extension
from capgate.settings import Settings


def builtin_extensions(settings: Settings) -> tuple[Extension, ...]:
    return ()
