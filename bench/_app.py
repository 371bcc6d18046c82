"""capgate's app as an import target for HTTP servers started by their own command line (``bench
servers`` compares them on it): settings from ``CAPGATE_*`` variables, no built-in OCR worker."""

from __future__ import annotations

from capgate.server.app import ProtocolApp, create_app
from capgate.settings import from_env


def app() -> ProtocolApp:
    return create_app(from_env())
