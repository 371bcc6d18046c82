"""The admin API's OpenAPI 3.1 description, made from the same table as its routes
(:data:`capgate.server.admin.api.OPERATIONS`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capgate.server.admin.api import Operation

_PATH_PARAM = re.compile(r"{(\w+)}")
ERROR = {"description": "an error", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}


def version() -> str:
    try:
        return metadata.version("capgate")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree never installed
        return "unknown"


def openapi(operations: Sequence[Operation], prefix: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "string" if name == "address" else "integer"}}
            for name in _PATH_PARAM.findall(op.path)]
        parameters += [{"name": p.name, "in": "query", "required": False, "description": p.description,
                        "schema": {"type": p.type}} for p in op.query]
        entry: dict[str, Any] = {
            "operationId": op.name, "summary": op.summary, "parameters": parameters,
            "responses": {str(op.status): {"description": op.returns, "content": {"application/json": {
                "schema": {"type": "object"}}}},
                "400": ERROR, "401": ERROR, "403": ERROR, "404": ERROR},
        }
        if op.body is not None:
            entry["requestBody"] = {"required": bool(op.body.get("required")),
                                    "content": {"application/json": {"schema": op.body}}}
        paths.setdefault(prefix + op.path, {})[op.method.lower()] = entry
    paths[prefix + "/openapi.json"] = {"get": {"operationId": "openapi", "summary": "This description",
                                               "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "capgate admin API", "version": version(),
                 "description": "Accounts, money, worker tokens, tasks, bans and OCR profiles of one capgate "
                                "service. Authenticate with an admin token (capgate admin-tokens create NAME) as "
                                "'Authorization: Bearer cga_...'. See docs/admin-api.md."},
        "components": {"securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}}},
        "security": [{"adminToken": []}],
        "paths": paths,
    }
