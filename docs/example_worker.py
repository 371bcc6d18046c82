"""A capgate worker in plain Python (standard library only): claim, heartbeat, answer or fail.

Replace ``solve()`` with your solver. Usage:
    python example_worker.py --server http://127.0.0.1:8000 --token cgw_... [--methods turnstile]
"""

from __future__ import annotations

import argparse
import json
import threading
import urllib.error
import urllib.request
from typing import Any


def call(server: str, token: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{server.rstrip('/')}/worker/v1/{path}", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def solve(task: dict[str, Any]) -> dict[str, Any] | None:
    """Return the answer's fields (see the table in worker-api.md), or None if you can't."""
    if task["answer_kind"] == "token":
        return {"token": f"EXAMPLE-TOKEN-for-{task['params'].get('sitekey', '')}"}
    return None


def heartbeat_until(stop: threading.Event, server: str, token: str, task: dict[str, Any]) -> None:
    while not stop.wait(10):
        call(server, token, f"tasks/{task['id']}/heartbeat", {"lease": task["lease"], "lease_seconds": 30})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--methods", default="turnstile")
    parser.add_argument("--once", action="store_true", help="stop after one task (for tests)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    while True:
        status, reply = call(args.server, args.token, "claim", {"methods": methods, "wait": 20})
        if status != 200:
            raise SystemExit(f"claim refused: {status} {reply}")
        task = reply["task"]
        if task is None:
            continue
        stop = threading.Event()
        threading.Thread(target=heartbeat_until, args=(stop, args.server, args.token, task), daemon=True).start()
        try:
            answer = solve(task)
        finally:
            stop.set()
        if answer is None:
            call(args.server, args.token, f"tasks/{task['id']}/fail", {"lease": task["lease"], "error": None})
        else:
            call(args.server, args.token, f"tasks/{task['id']}/answer", {"lease": task["lease"], "answer": answer})
        if args.once:
            return


if __name__ == "__main__":
    main()
