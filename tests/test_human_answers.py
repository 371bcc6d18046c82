"""A person's answer must keep the task's own hints (issue 16, item 7): the check itself, and the worker
API refusing a human token's answer that breaks them (422, the lease kept) while a program's answer
and a corrected one go through. The page's side is in tests/test_human_page.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from capgate.workers.textcheck import answer_problem
from tests.appkit import AppHost, app_host
from tests.storekit import sqlite_backend
from tests.workerkit import act, claim_id, get, png_b64, submit

# ------------------------------------------------------------------------------------------ the check


@pytest.mark.parametrize(("params", "text"), [
    ({}, "anything at all"),
    ({"min_len": "4", "max_len": "6"}, "abcd"),
    ({"min_len": "4", "max_len": "6"}, "abcdef"),
    ({"min_len": "0", "max_len": "0"}, "x"),
    ({"numeric": "1"}, "0123"),
    ({"numeric": "2"}, "abCD"),
    ({"numeric": "3"}, "a1"),
    ({"numeric": "4"}, "ab-c"),
    ({"calc": "1"}, "-12"),
    ({"calc": "true", "numeric": "1"}, "42"),
    ({"language": "1"}, "жук7"),
    ({"language": "2"}, "bug7"),
    ({"numeric": "2", "phrase": "1"}, "two words"),
    ({"min_len": "odd", "numeric": " 1 "}, "12"),  # an odd value counts as unset, as in the sandbox
])
def test_answers_that_keep_the_hints(params: dict[str, str], text: str) -> None:
    assert answer_problem(params, text) is None


@pytest.mark.parametrize(("params", "text", "words"), [
    ({"min_len": "5"}, "abc", "at least 5 characters; the answer has 3"),
    ({"max_len": "4"}, "abcde", "at most 4 characters; the answer has 5"),
    ({"numeric": "1"}, "12a4", "digits only"),
    ({"numeric": "2"}, "ab3", "letters only"),
    ({"numeric": "4"}, "ab3", "without digits"),
    ({"calc": "1"}, "7+5", "whole number"),
    ({"language": "1"}, "жуk", "Cyrillic letters only"),
    ({"language": "2"}, "bugж", "Latin letters only"),
])
def test_answers_that_break_them_say_how(params: dict[str, str], text: str, words: str) -> None:
    problem = answer_problem(params, text)
    assert problem is not None and words in problem


# ------------------------------------------------------------------------------------------ the worker API


@dataclass(frozen=True)
class Setup:
    host: AppHost
    key: str  # a live customer key
    person: str  # a --human worker token
    program: str  # an ordinary worker token


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    with app_host(sqlite_backend(tmp_path_factory.mktemp("human-answers"))) as host:
        host.register_worker(["normal"])  # live image tasks are accepted
        yield Setup(host, host.make_key(sandbox=False, threads=50), host.worker_token("alice", ["normal"], human=True),
                    host.worker_token("bot", ["normal"]))


@pytest.fixture()
async def client(setup: Setup) -> AsyncIterator[httpx.AsyncClient]:
    async with setup.host.aclient() as http:
        yield http


async def test_a_person_is_told_what_is_wrong_and_keeps_the_task(client: httpx.AsyncClient, setup: Setup) -> None:
    task_id = await submit(client, setup.key, method="base64", body=png_b64(), numeric="1", min_len="5",
                           max_len="6")
    task = await claim_id(client, setup.person, task_id, ["normal"])
    for typed, words in (("123", "at least 5 characters"), ("1234567", "at most 6 characters"),
                         ("12a45", "digits only")):
        reply = await act(client, setup.person, task, "answer", answer={"text": typed})
        assert reply.status_code == 422, reply.text
        assert words in reply.json()["error"]
        assert await get(client, setup.key, task_id) == "CAPCHA_NOT_READY"  # nothing settled, nothing charged
    # The lease is still the person's: a heartbeat holds it, and the corrected answer settles the task.
    assert (await act(client, setup.person, task, "heartbeat")).status_code == 200
    assert (await act(client, setup.person, task, "answer", answer={"text": "12345"})).status_code == 200
    assert await get(client, setup.key, task_id) == "OK|12345"


async def test_a_program_answer_is_its_own_business(client: httpx.AsyncClient, setup: Setup) -> None:
    """Only people are checked: a program's answer settles as sent (the OCR worker keeps the hints itself)."""
    task_id = await submit(client, setup.key, method="base64", body=png_b64(), min_len="5")
    task = await claim_id(client, setup.program, task_id, ["normal"])
    assert (await act(client, setup.program, task, "answer", answer={"text": "abc"})).status_code == 200
    assert await get(client, setup.key, task_id) == "OK|abc"


async def test_a_task_without_hints_takes_any_answer(client: httpx.AsyncClient, setup: Setup) -> None:
    task_id = await submit(client, setup.key, method="base64", body=png_b64())
    task = await claim_id(client, setup.person, task_id, ["normal"])
    assert (await act(client, setup.person, task, "answer", answer={"text": "x"})).status_code == 200
    assert await get(client, setup.key, task_id) == "OK|x"
