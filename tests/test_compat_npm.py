"""The JavaScript clients of the protocol, unmodified, against a running capgate.

Each package is installed at its pinned version by npm into a folder of the test's own, and driven by
``tests/js/drive.cjs``. The packages call the vendor's fixed URLs (``https://2captcha.com/in.php``, or
``http://`` for 2captcha-node); ``tests/js/hostmap.cjs``, preloaded with ``node --require``, sends those
connections to the capgate processes here (as a hosts-file line would), and ``NODE_EXTRA_CA_CERTS``
trusts a throwaway trustme CA whose certificate names the vendor hosts. Nothing else is changed: the
clients build their requests, JSON bodies included, as they do against the real service.

Skipped, with the reason printed, when node or npm is absent or the install fails (no registry).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import b64, png
from tests.serverproc import REPO, ServerProcess
from tests.vendorkit import VENDOR_HOSTS, VendorServers, vendor_servers

PACKAGES = {
    "@2captcha/captcha-solver": "1.3.9",
    "2captcha-ts": "2.4.1",
    "2captcha": "3.0.7",
    "rucaptcha-2captcha": "2.2.1",
    "2captcha-node": "2.2.1",
}
JS = REPO / "tests" / "js"
PLAIN_HTTP = {"2captcha-node"}  # calls http://2captcha.com


@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node or npm is not installed (Debian: apt-get install nodejs npm; `make unit` does)")
    folder = tmp_path_factory.mktemp("npm")
    (folder / "package.json").write_text('{"name": "capgate-compat", "private": true}')
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    try:
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *specs], cwd=folder,
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip("npm install of the JS clients took over 300 s")
    if done.returncode != 0:
        pytest.skip(f"npm install of the JS clients failed: {done.stderr.strip()[-500:]}")
    return folder / "node_modules"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VendorServers]:
    with vendor_servers(tmp_path_factory.mktemp("npm-servers")) as found:
        yield found


def drive(package: str, node_modules: Path, servers: VendorServers, key: str, tag: str) -> dict[str, Any]:
    tls, plain, ca_path = servers.tls, servers.plain, servers.ca_path
    env = {**os.environ, "NODE_PATH": str(node_modules), "NODE_EXTRA_CA_CERTS": str(ca_path),
           "CAPGATE_HOSTS": ",".join(VENDOR_HOSTS), "CAPGATE_HTTPS_PORT": str(tls.port),
           "CAPGATE_HTTP_PORT": str(plain.port), "IMAGE": b64(png(seed=hash(tag) % 1000)),
           "GRID": b64(png(90, 90, seed=7)), "TAG": tag}
    done = subprocess.run(["node", "--require", str(JS / "hostmap.cjs"), str(JS / "drive.cjs"), package, key],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


@dataclass(frozen=True)
class Run:
    got: dict[str, Any]  # each call's {"ok": value} or {"error": text}
    tag: str  # the answer its image tasks were given (sandbox-answer-TAG)
    key: str
    server: ServerProcess


@pytest.fixture(scope="module")
def runs(node_modules: Path, servers: VendorServers) -> dict[str, Run]:
    """Every package driven once, all at a time (their polls mostly wait)."""
    tls, plain = servers.tls, servers.plain
    plan: dict[str, tuple[str, str, ServerProcess]] = {}
    for package in PACKAGES:
        server = plain if package in PLAIN_HTTP else tls
        plan[package] = (server.create_key(sandbox=True, threads=20, balance="3"), uuid.uuid4().hex[:10], server)
    with ThreadPoolExecutor(len(plan)) as pool:
        futures = {package: pool.submit(drive, package, node_modules, servers, key, tag)
                   for package, (key, tag, _) in plan.items()}
        return {package: Run(future.result(), *plan[package][1::-1], plan[package][2])
                for package, future in futures.items()}


def ok(got: dict[str, Any], call: str) -> Any:
    """What ``call`` resolved with; a failure shows every call's outcome."""
    assert "ok" in got[call], got
    return got[call]["ok"]


@pytest.mark.parametrize("package", ["@2captcha/captcha-solver", "2captcha-ts"])
def test_the_official_client_and_its_fork(runs: dict[str, Run], package: str) -> None:
    got, tag = runs[package].got, runs[package].tag
    assert ok(got, "image")["data"] == tag, got  # a JSON body, json=1 and header_acao inside it
    assert got["balance"] == {"ok": 3}
    assert ok(got, "recaptcha")["data"].startswith("SANDBOX-FAKE-TOKEN-"), got["recaptcha"]
    assert ok(got, "turnstile")["data"], got["turnstile"]
    assert got["report"] == {"ok": "OK_REPORT_RECORDED"}
    # The client's own words for ERROR_KEY_DOES_NOT_EXIST.
    assert got["wrong_key"] == {"error": "APIError: The key you've provided does not exist."}
    if "grid" in got:
        assert json.loads(ok(got, "grid")["data"]), got["grid"]


def test_2captcha(runs: dict[str, Run]) -> None:
    got, tag = runs["2captcha"].got, runs["2captcha"].tag
    assert ok(got, "image")["data"] == tag, got  # the image alone, as JSON under text/plain
    assert got["balance"] == {"ok": 3}
    assert ok(got, "recaptcha")["data"].startswith("SANDBOX-FAKE-TOKEN-"), got["recaptcha"]
    assert got["report"] == {"ok": None}, got["report"]  # resolves with nothing on OK_REPORT_RECORDED
    assert got["wrong_key"] == {"error": "APIError: The key you've provided does not exist."}


def test_rucaptcha_2captcha(runs: dict[str, Run]) -> None:
    got, tag = runs["rucaptcha-2captcha"].got, runs["rucaptcha-2captcha"].tag
    assert ok(got, "image")["data"] == tag, got  # axios posts the parameters as a JSON object
    assert ok(got, "price")["token"] and ok(got, "price")["price"] == "0.00", got["price"]
    assert got["report"] == {"ok": {"status": 1, "request": "OK_REPORT_RECORDED"}}
    assert got["balance"] == {"ok": 3}
    assert got["wrong_key"]["error"].startswith("ERROR_KEY_DOES_NOT_EXIST"), got["wrong_key"]


def test_2captcha_node(runs: dict[str, Run]) -> None:
    run = runs["2captcha-node"]
    solved = ok(run.got, "image")  # JSON under multipart/form-data with no boundary, over plain HTTP
    answer = httpx.get(run.server.url("res.php"), params={"key": run.key, "action": "get", "id": solved["id"]})
    assert answer.text == f"OK|{solved['text']}"
    assert run.got["balance"] == {"ok": "3.00"}, run.got
