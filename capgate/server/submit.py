"""in.php: from request parameters to a stored task, or the code that says why not."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from capgate.protocol import methods as registry
from capgate.protocol.codes import C
from capgate.protocol.methods import Category, Method
from capgate.server.images import ImageLimits, ImageRejected, check_extension, check_image, decode_base64
from capgate.server.params import RequestParams
from capgate.settings import Settings
from capgate.store.models import NewTask, Pool

# Parameters about the call, not the task: never stored, never part of the duplicate check.
TRANSPORT_PARAMS = frozenset({"key", "method", "json", "header_acao", "soft_id", "pingback", "file",
                              "body", "action"})
MAX_PARAM_LENGTH = 64 * 1024


class Rejected(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def resolve_method(raw: Mapping[str, str]) -> tuple[Method, dict[str, str]]:
    params = registry.canonical_params(raw)
    method = registry.resolve(params)
    if method is None:
        raise Rejected(C.BAD_PARAMETERS)
    return method, registry.canonical_params(params, method)


def _limits(settings: Settings) -> ImageLimits:
    return ImageLimits(settings.image_min_bytes, settings.image_max_bytes, settings.image_max_side)


def _images(method: Method, request: RequestParams, params: dict[str, str],
            settings: Settings) -> dict[str, bytes]:
    """The task's images, decoded and checked, keyed by parameter name."""
    limits = _limits(settings)
    blobs: dict[str, bytes] = {}
    for name in method.image_params:
        upload = request.files.get("file" if name == "body" else name)
        try:
            if upload is not None:
                check_extension(upload.filename)
                data = upload.data
            elif params.get(name):
                data = decode_base64(params[name])
            else:
                continue
            check_image(data, limits)
        except ImageRejected as exc:
            raise Rejected(exc.code) from None
        blobs[name] = data
    for name in method.media_params:  # audio: size limits only, it is no image
        upload = request.files.get("file" if name == "body" else name)
        if upload is not None:
            data = upload.data
        elif params.get(name):
            try:
                data = decode_base64(params[name])
            except ImageRejected as exc:
                raise Rejected(exc.code) from None
        else:
            continue
        if len(data) < limits.min_bytes:
            raise Rejected(C.ZERO_CAPTCHA_FILESIZE)
        if len(data) > limits.max_bytes:
            raise Rejected(C.TOO_BIG_CAPTCHA_FILESIZE)
        blobs[name] = data
    return blobs


# hashlib lets go of the GIL for inputs over 2 kB; taking it back can wait on the store's writer
# thread, which costs far more than hashing a captcha. Small pieces keep the GIL.
_HASH_PIECE = 2047


def _fingerprint(method: Method, params: Mapping[str, str], blobs: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256(method.name.encode())
    for name in sorted(params):
        digest.update(b"\x00" + name.encode() + b"\x01" + params[name].encode())
    for name in sorted(blobs):
        digest.update(b"\x02" + name.encode() + b"\x03")
        data = memoryview(blobs[name])
        for start in range(0, len(data), _HASH_PIECE):
            digest.update(data[start:start + _HASH_PIECE])
    return digest.hexdigest()


def build_task(request: RequestParams, settings: Settings, sandbox: bool,
               not_before: float = 0.0) -> NewTask:
    """Validate a submit. Raises :class:`Rejected` with the protocol's code."""
    method, canonical = resolve_method(request.values)
    blobs = _images(method, request, canonical, settings)
    for name in method.required:
        if name in method.image_params or name in method.media_params:
            if name not in blobs:
                raise Rejected(method.missing_code(name))
        elif not canonical.get(name, "").strip():
            raise Rejected(method.missing_code(name))
    if method.malformed_site_key(canonical):
        raise Rejected(C.WRONG_GOOGLEKEY)
    # Only what the method's row knows is stored and handed to workers: anything else a client sends
    # would cost every worker that reads the task, and a store row per submit.
    # The duplicate check still sees everything sent: two requests that differ only in a parameter
    # the type does not use are two tasks, as a client that adds a nonce expects.
    sent = {name: value for name, value in canonical.items()
            if name not in TRANSPORT_PARAMS and name not in method.image_params
            and name not in method.media_params}
    if any(len(value) > MAX_PARAM_LENGTH for value in sent.values()):
        raise Rejected(C.BAD_PARAMETERS)
    known = method.known_params
    # A sandbox task keeps the parameters that carry its directives (``sandbox-…`` anywhere): the
    # sandbox worker, its only reader, reads them there.
    params = {name: value for name, value in sent.items()
              if name in known or (sandbox and "sandbox-" in value)}
    if method.category is Category.IMAGE:
        _check_image_options(params)
    deadline = settings.image_deadline if method.deadline <= 90 else settings.token_deadline
    return NewTask(
        method=method.name, params=params, blobs=blobs, fingerprint=_fingerprint(method, sent, blobs),
        price=settings.price_micros(method.name), deadline_s=deadline,
        pool=Pool.SANDBOX if sandbox else Pool.MAIN, not_before=not_before,
        pingback=canonical.get("pingback") or None,
    )


_IMAGE_OPTION_RANGES = {"phrase": (0, 1), "regsense": (0, 1), "numeric": (0, 4), "calc": (0, 1),
                        "min_len": (0, 20), "max_len": (0, 20), "language": (0, 2), "question": (0, 1)}


def _check_image_options(params: Mapping[str, str]) -> None:
    values: dict[str, int] = {}
    for name, (low, high) in _IMAGE_OPTION_RANGES.items():
        raw = params.get(name, "").strip()
        if not raw:
            continue
        if raw.lower() in ("true", "false"):
            raw = "1" if raw.lower() == "true" else "0"
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise Rejected(C.BAD_PARAMETERS)
        values[name] = int(raw)
    if values.get("min_len", 0) and values.get("max_len", 0) and values["min_len"] > values["max_len"]:
        raise Rejected(C.BAD_PARAMETERS)
