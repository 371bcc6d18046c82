"""The yardstick: a bare Starlette endpoint that returns a constant, as a user would serve it instead of
capgate: uvicorn with its defaults (``loop="auto"``, ``http="auto"``: uvloop and httptools when
installed), no access log, and one process per core (``--workers``, default ``os.cpu_count()``).

Run: ``python -m bench._bare --port 8123 [--workers N]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

BODY = "OK|bare"


async def constant(request: Request) -> Response:
    if request.method == "POST":
        await request.body()  # read the body, as capgate reads it
    return PlainTextResponse(BODY)


def create_app() -> Starlette:
    return Starlette(routes=[Route("/", constant, methods=["GET", "POST"])])


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m bench._bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", dest="log_level", default="warning")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.workers > 1:
        uvicorn.run("bench._bare:create_app", factory=True, workers=args.workers, host=args.host, port=args.port,
                    log_level=args.log_level, access_log=False)
    else:
        uvicorn.run(create_app(), host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
