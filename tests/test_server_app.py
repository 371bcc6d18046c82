"""The HTTP layer in-process: whatever breaks inside, a protocol answer is HTTP 200 with a code."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from capgate.server.app import create_app
from capgate.settings import Settings
from tests.fixtures import MODES, Mode, expect_error

KEY = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("mode", MODES)
async def test_internal_failure_is_error_server_error_with_http_200(tmp_path: Path, mode: Mode,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The store is never opened (no lifespan): every call fails inside, none may become a 500."""
    app = create_app(Settings(db=str(tmp_path / "capgate.db"), ocr=False))
    query = {"key": KEY, **({"json": "1"} if mode == "json" else {})}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://capgate") as client:
        submit = await client.get("/in.php", params={**query, "method": "turnstile", "sitekey": "k",
                                                     "pageurl": "https://x/"})
        result = await client.post("/res.php", params=query, data={"action": "get", "id": "12345678"})
    for response in (submit, result):
        expect_error(response, "ERROR_SERVER_ERROR", mode)
    assert "unexpected error" in caplog.text
