"""Shared helpers for the protocol and service tests: tiny images, request builders, exact-bytes checks.

Not fixtures in pytest's sense (those live in conftest.py and in the modules that need an app of
their own): plain functions, so that ruff and mypy see ordinary imports. Accounts and tokens are made
through an app's store (tests/appkit.py), worker-API calls are in tests/workerkit.py.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import re
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from PIL import Image, ImageDraw, ImageFont

from capgate.protocol.codes import CODES, NOT_READY

PLAIN = "text/plain; charset=utf-8"
JSON = "application/json"
Mode = Literal["plain", "json"]
Transport = Literal["get", "form", "multipart", "split"]
MODES: tuple[Mode, ...] = ("plain", "json")
TRANSPORTS: tuple[Transport, ...] = ("get", "form", "multipart", "split")
ID_RE = re.compile(rb"^OK\|(\d{8,})$")
TOKEN_RE = r"SANDBOX-FAKE-TOKEN-[0-9a-f]{64}"
PAGEURL = "https://example.com/login"

# ------------------------------------------------------------------------------------------ images


def _noise(width: int, height: int, seed: int) -> Image.Image:
    """A grey image whose PNG does not compress below the 100-byte floor."""
    pixels = bytes((i * 2654435761 + seed * 40503) >> 7 & 0xFF for i in range(width * height))
    return Image.frombytes("L", (width, height), pixels)


def image_bytes(fmt: str = "PNG", width: int = 60, height: int = 30, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    image = _noise(width, height, seed)
    if fmt in ("JPEG", "BMP", "WEBP"):
        image = image.convert("RGB")
    image.save(buf, fmt)
    data = buf.getvalue()
    assert len(data) >= 100, f"{fmt} test image is only {len(data)} bytes"
    return data


def png(width: int = 60, height: int = 30, seed: int = 0) -> bytes:
    return image_bytes("PNG", width, height, seed)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A few hundred bytes claiming ``width`` x ``height`` RGB pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 200_000, 9)) + _png_chunk(b"IEND", b""))


def draw(text: str, size: tuple[int, int] | None = None, mode: str = "L", font_size: int = 32) -> bytes:
    """A clean, machine-font captcha: the generic model reads these reliably."""
    width = size[0] if size else max(160, 24 * len(text))
    height = size[1] if size else 50
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).text((8, 6), text, fill=0, font=ImageFont.load_default(size=font_size))
    buf = io.BytesIO()
    image.convert(mode).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------------ requests


def multipart(fields: Mapping[str, str | bytes], files: Mapping[str, tuple[str, bytes]] | None = None,
              boundary: str = "capgate-test-boundary") -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand (httpx only sends multipart when there are files)."""
    out = bytearray()
    for name, value in fields.items():
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode()
        out += raw + b"\r\n"
    for name, (filename, data) in (files or {}).items():
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        out += data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), {"content-type": f"multipart/form-data; boundary={boundary}"}


def send(client: httpx.Client, url: str, params: Mapping[str, str], transport: Transport = "get",
         files: Mapping[str, tuple[str, bytes]] | None = None) -> httpx.Response:
    """One protocol call, its parameters carried the way ``transport`` says."""
    if files and transport in ("get", "form"):
        transport = "multipart"
    if transport == "get":
        return client.get(url, params=dict(params))
    if transport == "form":
        return client.post(url, data=dict(params))
    if transport == "multipart":
        body, headers = multipart(params, files)
        return client.post(url, content=body, headers=headers)
    # split: the call's envelope in the query, the task in the body
    envelope = {k: v for k, v in params.items() if k in ("key", "json", "header_acao", "action")}
    rest = {k: v for k, v in params.items() if k not in envelope}
    if files:
        body, headers = multipart(rest, files)
        return client.post(url, params=envelope, content=body, headers=headers)
    return client.post(url, params=envelope, data=rest)


def with_mode(params: Mapping[str, str], mode: Mode) -> dict[str, str]:
    return {**params, "json": "1"} if mode == "json" else dict(params)


# ------------------------------------------------------------------------------------------ replies


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(code: str, mode: Mode) -> bytes:
    """The exact body of an error (or ``CAPCHA_NOT_READY``) reply."""
    if mode == "plain":
        return code.encode()
    if code == NOT_READY:
        return b'{"status":0,"request":"CAPCHA_NOT_READY"}'
    return dumps({"status": 0, "request": code, "error_text": CODES[code].meaning})


def ok_body(payload: str, mode: Mode, **extra: Any) -> bytes:
    """``OK|payload`` or ``{"status":1,"request":"payload",...}``."""
    if mode == "plain":
        return f"OK|{payload}".encode()
    return dumps({"status": 1, "request": payload, **extra})


def bare_body(payload: str, mode: Mode) -> bytes:
    """A success without ``OK|`` in plain mode (getbalance, reports, batch)."""
    return payload.encode() if mode == "plain" else dumps({"status": 1, "request": payload})


def expect(response: httpx.Response, body: bytes, mode: Mode) -> None:
    """HTTP 200, the mode's content type, and exactly ``body`` (so no trailing newline)."""
    assert response.status_code == 200, (response.status_code, response.content)
    assert response.headers["content-type"] == (PLAIN if mode == "plain" else JSON)
    assert response.content == body


def expect_error(response: httpx.Response, code: str, mode: Mode) -> None:
    expect(response, error_body(code, mode), mode)


def task_id_of(response: httpx.Response, mode: Mode = "plain") -> str:
    assert response.status_code == 200, response.content
    if mode == "json":
        body = response.json()
        assert body["status"] == 1, body
        value = body["request"]
        assert isinstance(value, str)
        assert response.content == dumps({"status": 1, "request": value})
        assert re.fullmatch(r"\d{8,}", value)
        return value
    match = ID_RE.match(response.content)
    assert match is not None, response.content
    return match.group(1).decode()


# ------------------------------------------------------------------------------------------ clients


def client_from(address: str, timeout: float = 20.0) -> httpx.Client:
    """A client whose requests come from ``address`` (127.0.0.x): strikes and bans are per address,
    so wrong-key tests use their own and never get the shared 127.0.0.1 banned."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=timeout)


class Api:
    """in.php / res.php for one key on one server."""

    def __init__(self, client: httpx.Client, base_url: str, key: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.key = key

    def submit(self, params: Mapping[str, str], mode: Mode = "plain", transport: Transport = "get",
               files: Mapping[str, tuple[str, bytes]] | None = None) -> httpx.Response:
        return send(self.client, f"{self.base_url}/in.php", with_mode({"key": self.key, **params}, mode),
                    transport, files)

    def submit_id(self, params: Mapping[str, str], files: Mapping[str, tuple[str, bytes]] | None = None,
                  ) -> str:
        return task_id_of(self.submit(params, files=files))

    def res(self, params: Mapping[str, str], mode: Mode = "plain", transport: Transport = "get",
            ) -> httpx.Response:
        return send(self.client, f"{self.base_url}/res.php", with_mode({"key": self.key, **params}, mode),
                    transport)

    def get(self, task_id: str, mode: Mode = "plain", wait: float | None = None,
            transport: Transport = "get", action: str = "get") -> httpx.Response:
        params = {"action": action, "id": task_id}
        if wait is not None:
            params["wait"] = str(wait)
        return self.res(params, mode, transport)

    def settle(self, task_id: str, wait: float = 10.0) -> httpx.Response:
        """Poll until the task is no longer pending (long-poll, then a short loop as a fallback)."""
        deadline = time.monotonic() + wait
        while True:
            response = self.get(task_id, wait=min(5.0, wait))
            if response.content != NOT_READY.encode() or time.monotonic() > deadline:
                return response
            time.sleep(0.1)


# ------------------------------------------------------------------------------------------ raw HTTP


def raw_request(base_url: str, head: bytes, body_parts: list[bytes], timeout: float = 10.0) -> bytes:
    """Send a hand-made request (head, then body parts) and return the raw response bytes read
    until the response's own Content-Length is satisfied. The body need not be complete: that is
    the point (a server that waits for the whole declared body would time out here)."""
    host, _, port = base_url.removeprefix("http://").partition(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed while we were still sending
                break
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                match = re.search(rb"(?i)content-length:\s*(\d+)", data[:head_end])
                if match and len(data) - head_end - 4 >= int(match.group(1)):
                    break
        return data


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


# ------------------------------------------------------------------------------------------ data


def nonce() -> str:
    """A parameter value that makes a submit unique (no ERROR_BAD_DUPLICATES between tests)."""
    return uuid.uuid4().hex


DATA_SETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def labelled(name: str, count: int) -> list[tuple[bytes, str]]:
    """``count`` labelled images of a shared set, from the held-out part of the split the benchmarks
    use (``random.Random(7)`` shuffle, rows 500 on); the test is skipped when the set is absent."""
    folder = DATA_SETS / name
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"data set {name} not present at {folder}")
    with (folder / "labels.csv").open(newline="", encoding="utf-8") as fh:
        rows = [(r["filename"], r["label"]) for r in csv.DictReader(fh)]
    random.Random(7).shuffle(rows)
    rows = (rows[500:] + rows[:500])[:count]
    return [((folder / f).read_bytes(), label) for f, label in rows]

