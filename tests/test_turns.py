"""The MAX_USER_TURN window, without a server."""

from __future__ import annotations

from capgate.server.turns import SubmitTurns


def test_off_by_default() -> None:
    turns = SubmitTurns(0, 3.0, 10.0)
    assert all(turns.allow(1, 0.0) for _ in range(1000))


def test_window_block_and_release() -> None:
    turns = SubmitTurns(3, 3.0, 10.0)
    assert [turns.allow(1, t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert not turns.allow(1, 2.5)  # a 4th within 3 s
    assert turns.allow(2, 2.5)  # other keys are not touched
    assert not turns.allow(1, 12.4)
    assert turns.allow(1, 12.5)  # the block is over, and the count starts again
    assert turns.allow(1, 12.6) and turns.allow(1, 12.7)
    assert not turns.allow(1, 12.8)


def test_a_slow_client_is_never_blocked() -> None:
    turns = SubmitTurns(3, 3.0, 10.0)
    assert all(turns.allow(1, t * 1.01) for t in range(100))
