"""Exceptions of capgate's client: one class per family of protocol codes, plus the failures that are
not codes at all.

::

    CapgateError                      everything the client raises; .code, .task_id, .raw (when known)
    ├── ServiceError                  the service answered an error code (an unknown one raises this class)
    │   ├── AuthError                 Family.AUTH: key wrong or unknown, IP_BANNED, address not allowed
    │   ├── FundsError                Family.FUNDS: no balance, no free thread, too many submits
    │   ├── CapacityError             Family.CAPACITY: ERROR_NO_SLOT_AVAILABLE, still so when the solve's
    │   │                             timeout ran out (no worker serves the type, or all are busy)
    │   ├── BadInputError             Family.BAD_INPUT: the request is wrong (also raised before any I/O
    │   │                             for a missing parameter or an image that cannot be read)
    │   ├── UnsolvableError           Family.UNSOLVABLE: the task settled without an answer
    │   ├── ReportError               Family.REPORT: a report was refused (``report`` returns False instead)
    │   └── ServerError               Family.SERVER: transient server errors that outlived the retries
    ├── NetworkError                  the transport failed (connect, read, TLS) on every retry
    ├── ProtocolError                 a body that is neither an answer nor a code, or a malformed answer
    └── SolveTimeout (TimeoutError)   the solve's overall deadline passed before an answer came

``CAPCHA_NOT_READY`` (Family.PENDING) is never an exception. Which codes are retried and which stop at
once comes from the ``Advice`` column of :mod:`capgate.protocol.codes`, never from this module.
"""

from __future__ import annotations

from capgate.protocol.codes import CODES, Family, lookup


class CapgateError(Exception):
    """Base of every exception the client raises."""

    def __init__(self, message: str, *, code: str | None = None, task_id: str | None = None,
                 raw: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.task_id = task_id
        self.raw = raw


class ServiceError(CapgateError):
    """The service answered with an error code."""

    family: Family | None = None


class AuthError(ServiceError):
    family = Family.AUTH


class FundsError(ServiceError):
    family = Family.FUNDS


class CapacityError(ServiceError):
    """``ERROR_NO_SLOT_AVAILABLE`` until the call's timeout: the service has no worker free for the
    type (capgate: none serves it at all). Retried every 5 s or more, backing off, within the timeout."""

    family = Family.CAPACITY


class BadInputError(ServiceError):
    family = Family.BAD_INPUT


class UnsolvableError(ServiceError):
    family = Family.UNSOLVABLE


class ReportError(ServiceError):
    family = Family.REPORT


class ServerError(ServiceError):
    family = Family.SERVER


class NetworkError(CapgateError):
    pass


class ProtocolError(CapgateError):
    pass


class SolveTimeout(CapgateError, TimeoutError):
    pass


BY_FAMILY: dict[Family, type[ServiceError]] = {
    cls.family: cls
    for cls in (AuthError, FundsError, CapacityError, BadInputError, UnsolvableError, ReportError, ServerError)
    if cls.family is not None
}


def error_for(code: str, *, task_id: str | None = None, raw: str | None = None,
              detail: str | None = None) -> ServiceError:
    """The exception for a code, its message taken from the code table."""
    known = lookup(code)
    cls = BY_FAMILY.get(known.family, ServiceError) if known is not None else ServiceError
    meaning = known.meaning if known is not None else "unknown error code"
    message = f"{code}: {meaning}" + (f" ({detail})" if detail else "")
    if task_id is not None:
        message += f" [task {task_id}]"
    return cls(message, code=code, task_id=task_id, raw=raw)


def local_error(code: str, detail: str) -> ServiceError:
    """What the service would answer, raised before sending: the same class and code."""
    assert code in CODES, code
    return error_for(code, detail=detail)
