"""/metrics: open to this machine only unless allowed, Prometheus's format, and series that move when a
task is submitted and solved; the request ids and codes every answer carries."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from capgate.server.observe import endpoint_of
from tests.appkit import AppHost, app_host
from tests.storekit import BACKENDS, backend_of, sqlite_backend

TURNSTILE = {"method": "turnstile", "sitekey": "0x4AAAAAAA", "pageurl": "https://example.com/"}


@pytest.fixture(scope="module", params=BACKENDS)
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHost]:
    backend = backend_of(request, request.param, tmp_path_factory.mktemp(f"metrics-{request.param}"))
    with app_host(backend) as made:
        yield made


def scrape(host: AppHost) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = host.http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(series: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_for_this_machine_unless_allowed(host: AppHost, tmp_path_factory: pytest.TempPathFactory) -> None:
    with host.client("192.0.2.10") as outsider:
        refused = outsider.get("/metrics")
        assert refused.status_code == 403 and "CAPGATE_METRICS_ALLOW" in refused.text
    with host.client("::1") as local:
        assert local.get("/metrics").status_code == 200
    backend = sqlite_backend(tmp_path_factory.mktemp("open"))
    with app_host(backend, metrics_allow="192.0.2.0/24") as opened, opened.client("192.0.2.10") as allowed:
        assert allowed.get("/metrics").status_code == 200
        assert opened.http.get("/metrics").status_code == 403  # loopback is no longer in the list


def test_series_move_when_a_task_is_submitted_and_solved(host: AppHost) -> None:
    before = scrape(host)
    key = host.make_key(sandbox=True, balance="1")
    api = host.api(key)
    submitted = api.submit(TURNSTILE)
    assert submitted.text.startswith("OK|")
    assert api.get(submitted.text[3:], wait=10).text.startswith("OK|")  # the sandbox answers at once
    assert api.get("123").text == "ERROR_WRONG_CAPTCHA_ID"
    deadline = time.monotonic() + 10
    while True:  # the settle is read back for the metrics within a second
        after = scrape(host)
        if value(after, "capgate_tasks_settled_total", method="turnstile", outcome="solved") > \
                value(before, "capgate_tasks_settled_total", method="turnstile", outcome="solved"):
            break
        assert time.monotonic() < deadline, "the solved task never reached the metrics"
        time.sleep(0.2)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("capgate_requests_total", endpoint="/in.php", code="OK") == 1
    assert moved("capgate_requests_total", endpoint="/res.php", code="OK") >= 1
    assert moved("capgate_requests_total", endpoint="/res.php", code="ERROR_WRONG_CAPTCHA_ID") == 1
    assert moved("capgate_requests_total", endpoint="/metrics", code="200") >= 1
    assert moved("capgate_tasks_settled_total", method="turnstile", outcome="solved") == 1
    assert moved("capgate_time_to_answer_seconds_count", method="turnstile", outcome="solved") == 1
    assert moved("capgate_time_to_answer_seconds_bucket", method="turnstile", outcome="solved", le="+Inf") == 1
    assert moved("capgate_ledger_entries_total", kind="topup") == 1
    assert value(after, "capgate_accounts") >= 1
    assert ("capgate_long_polls_waiting", (("kind", "res"),)) in after
    # Queue depth and workers online come from the database at scrape time.
    host.register_worker(["hcaptcha"])
    waiting = host.make_key(sandbox=False, balance="1")
    assert host.api(waiting).submit({"method": "hcaptcha", "sitekey": "s", "pageurl": "https://example.com/"}) \
        .text.startswith("OK|")
    now = scrape(host)
    assert value(now, "capgate_queue_depth", method="hcaptcha", pool="main") >= 1
    assert value(now, "capgate_workers_online", method="hcaptcha") >= 1


def test_every_answer_carries_a_request_id(host: AppHost) -> None:
    key = host.make_key(sandbox=True)
    seen = set()
    for reply in (host.api(key).submit(TURNSTILE), host.http.get("/res.php", params={"key": key, "action": "x"}),
                  host.http.get("/healthz"), host.http.get("/"), host.http.get("/admin/api/v1/accounts"),
                  host.http.get("/nowhere"), host.http.get("/in.php", headers={"X-Request-Id": "mine"})):
        rid = reply.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{6}-[0-9a-f]+", rid), rid  # always made here, never taken from the client
        seen.add(rid)
    assert len(seen) == 7


@pytest.mark.parametrize(("path", "label"), [
    ("/in.php", "/in.php"), ("/worker/v1/tasks/123/answer", "/worker/v1/tasks/{id}/answer"),
    ("/admin/api/v1/accounts/7/topup", "/admin/api/v1/accounts/{id}/topup"),
    ("/admin/api/v1/bans/192.0.2.1", "/admin/api/v1/bans/{id}"), ("/admin/static/dashboard.js", "/admin/static"),
    ("/wp-login.php", "other"), ("/admin/api/v1/tasks", "/admin/api/v1/tasks"),
])
def test_endpoint_labels_stay_few(path: str, label: str) -> None:
    assert endpoint_of(path) == label
