"""The pages a person opens: the landing page (``/``) and the dashboard (``/admin``), with the dashboard's
script and style sheet. Everything ships in the package (no CDN, no build step)."""

from __future__ import annotations

import html
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from capgate.server.admin.openapi import version
from capgate.server.security import page_policy

STATIC = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8",
          "logo.svg": "image/svg+xml"}
# The dashboard's own files only: script and style from this origin, calls to this origin.
DASHBOARD_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def landing_page() -> bytes:
    template = (STATIC / "landing.html").read_text(encoding="utf-8")
    return template.replace("{{version}}", html.escape(version())).encode("utf-8")


def landing_routes() -> list[BaseRoute]:
    page = landing_page()
    policy = page_policy(page)

    async def landing(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})

    async def dashboard(request: Request) -> Response:
        body = (STATIC / "dashboard.html").read_bytes()
        return HTMLResponse(body, headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-store"})

    async def asset(request: Request) -> Response:
        name = str(request.path_params.get("name", ""))
        media_type = ASSETS.get(name)
        if media_type is None:
            return PlainTextResponse("not found", status_code=404)
        return Response((STATIC / name).read_bytes(), media_type=media_type, headers={"Cache-Control": "no-cache"})

    async def to_dashboard(request: Request) -> Response:
        return RedirectResponse("/admin", status_code=308)

    return [Route("/", landing), Route("/admin", dashboard), Route("/admin/", to_dashboard),
            Route("/dashboard", to_dashboard), Route("/admin/static/{name}", asset)]
