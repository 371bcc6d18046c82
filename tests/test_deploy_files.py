"""The deploy files (Dockerfile, deploy/compose.yaml, deploy/systemd/) stay valid: they parse, and every
capgate command they run is one the CLI accepts, with the options it knows (argparse itself checks).
Docker may not run here; the topology they describe is tested with plain processes elsewhere
(test_load_consistency: three API processes and two workers on one PostgreSQL)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from capgate.cli import build_parser
from tests.serverproc import REPO

DEPLOY = REPO / "deploy"
# Options the integrator's branch adds to `capgate serve` (Granian's worker processes): accepted here
# until that branch is merged, checked by argparse once it is.
EXPECTED_AFTER_MERGE = {("serve", "--processes")}


def _interpolate(text: str) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR:?message}`` as compose would fill them with VAR unset
    (a required one with a stand-in)."""
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "set-by-operator", text)


def _accepts(args: list[str]) -> argparse.Namespace:
    """Parse ``capgate ARGS`` as the CLI would; fail the test with argparse's message if it refuses."""
    args = list(args)
    for command, option in EXPECTED_AFTER_MERGE:
        if args and args[0] == command and option in args and not _knows(command, option):
            at = args.index(option)
            del args[at:at + 2]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"capgate {shlex.join(args)}: {err.getvalue().strip()}")


def _knows(command: str, option: str) -> bool:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args([command, "--help"])
    return option in out.getvalue()


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (INSTRUCTION, rest)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_dockerfile_entrypoint_and_cmd_are_capgate_commands() -> None:
    instructions = _dockerfile()
    entry = [json.loads(rest) for word, rest in instructions if word == "ENTRYPOINT"]
    cmd = [json.loads(rest) for word, rest in instructions if word == "CMD"]
    assert entry[-1] == ["capgate"]
    _accepts(cmd[-1])
    assert [rest for word, rest in instructions if word == "USER"][-1] not in ("root", "0")
    health = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/healthz" in health[0]
    installs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "[train" not in installs and "torch" not in installs  # no training extras


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(_interpolate((DEPLOY / "compose.yaml").read_text()))
    return loaded


def test_compose_services_run_capgate_commands_in_order() -> None:
    services = _compose()["services"]
    assert set(services) == {"db", "migrate", "api", "ocr-worker"}
    capgate = {name: service for name, service in services.items() if service.get("image") == "capgate:latest"}
    assert set(capgate) == {"migrate", "api", "ocr-worker"}
    parsed = {name: _accepts([str(part) for part in service["command"]]) for name, service in capgate.items()}
    assert (parsed["migrate"].command, parsed["migrate"].db_command) == ("db", "upgrade")
    assert parsed["api"].command == "serve"
    assert parsed["ocr-worker"].command == "worker" and parsed["ocr-worker"].ocr
    # The migration runs first and must succeed; the API waits for it, the workers for the API.
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["ocr-worker"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert services["api"]["environment"]["CAPGATE_DB"].startswith("postgresql://capgate:")
    assert "CAPGATE_DB" not in services["ocr-worker"]["environment"]  # workers speak HTTP only
    assert int(services["ocr-worker"]["deploy"]["replicas"]) >= 1


def _unit(path: Path) -> dict[str, list[str]]:
    """``Key=value`` lines of a systemd unit, by key (repeatable keys keep every value)."""
    keys: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


@pytest.mark.parametrize("unit", sorted(p.name for p in (DEPLOY / "systemd").glob("*.service")))
def test_systemd_units_run_capgate_commands(unit: str) -> None:
    keys = _unit(DEPLOY / "systemd" / unit)
    assert keys["User"] == ["capgate"]
    for line in keys.get("ExecStartPre", []) + keys["ExecStart"]:
        words = shlex.split(re.sub(r"\$\{[A-Z_]+\}", "2", line))
        assert words[0].endswith("/capgate"), line
        _accepts(words[1:])


def test_systemd_api_requires_the_migration() -> None:
    keys = _unit(DEPLOY / "systemd" / "capgate.service")
    assert "capgate-migrate.service" in keys["Requires"][0] and "capgate-migrate.service" in keys["After"][0]
    migrate = _unit(DEPLOY / "systemd" / "capgate-migrate.service")
    assert migrate["Type"] == ["oneshot"]
