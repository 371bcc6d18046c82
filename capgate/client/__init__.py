"""capgate's Python client, for capgate and any CaptchaAI/2captcha-compatible service.

::

    from capgate.client import Client

    with Client("https://capgate.example", KEY) as client:
        solution = client.turnstile("0x4AAA...", "https://example.com/login")
        print(solution.answer.token, solution.task_id)

:class:`AsyncClient` has the same methods, awaited; concurrent solves share their polls.
Exceptions: :mod:`capgate.client.errors`.
"""

from capgate.client._engine import Solution, Threads
from capgate.client.aio import AsyncClient
from capgate.client.errors import (
    AuthError,
    BadInputError,
    CapacityError,
    CapgateError,
    FundsError,
    NetworkError,
    ProtocolError,
    ReportError,
    ServerError,
    ServiceError,
    SolveTimeout,
    UnsolvableError,
)
from capgate.client.sync import Client
from capgate.protocol.answers import (
    AngleAnswer,
    Answer,
    CellsAnswer,
    ClearanceAnswer,
    CoordinatesAnswer,
    GeeTestAnswer,
    ObjectAnswer,
    TextAnswer,
    TokenAnswer,
)

__all__ = [
    "AngleAnswer", "Answer", "AsyncClient", "AuthError", "BadInputError", "CapacityError", "CapgateError",
    "CellsAnswer", "ClearanceAnswer", "Client", "CoordinatesAnswer", "FundsError", "GeeTestAnswer", "NetworkError",
    "ObjectAnswer", "ProtocolError", "ReportError", "ServerError", "ServiceError", "Solution", "SolveTimeout",
    "TextAnswer", "Threads", "TokenAnswer", "UnsolvableError",
]
