"""Reading request bodies and query parameters, or answering 400/422 with field paths."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ValidationError

from gateway.problems import Problem
from topics.envelope import FieldError, field_errors

M = TypeVar("M", bound=BaseModel)

MAX_JSON_DEPTH = 400
MAX_ID = 2**63 - 1
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENS = frozenset(b"[{")


class TooDeep(ValueError):
    """JSON nested deeper than the parser may go."""


def deeper_than(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the brackets outside strings nest deeper than `limit`.

    json.loads recurses once per level and a RecursionError is no ValueError, so a document is
    measured before it is parsed.
    """
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    depth = 0
    for b in brackets:
        depth = depth + 1 if b in _OPENS else depth - 1
        if depth > limit:
            return True
    return False


def loads(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> Any:
    """json.loads for text from outside: TooDeep past `limit` levels, else ValueError if invalid."""
    if isinstance(raw, bytes) and not json.detect_encoding(raw).startswith("utf-8"):
        # In UTF-16 or UTF-32 a character's bytes may look like a quote and hide brackets.
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if deeper_than(data, limit):
        raise TooDeep(f"JSON nested deeper than {limit} levels")
    try:
        return json.loads(data)
    except RecursionError:
        # The count above is exact for UTF-8; this is a second guard.
        raise TooDeep(f"JSON nested deeper than {limit} levels") from None


def parse_id(raw: str) -> int | None:
    """An id from a path or query: ASCII digits only (no sign, space, `_` or `²`), 1..2**63-1."""
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def parse_uuid(raw: str) -> uuid.UUID | None:
    """A UUID from a path: ASCII only (uuid.UUID takes any Unicode digit for a hex one), or None."""
    if not raw.isascii():
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def _ascii_digits(value: object) -> object:
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be ASCII digits")
    return value


# For integer query parameters: int() would take " 1", "+1", "1_000" and "١٢". Put it after the
# Field: before it, the JSON schema would carry pydantic's `ge`/`le` instead of minimum/maximum.
ASCII_DIGITS = BeforeValidator(_ascii_digits)


def _integral_floats_as_ints(value: Any) -> Any:
    """JSON has one number type: 3.0 is the integer 3, as JSON Schema's `integer` says."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]
    return value


async def read_body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = loads(raw)
    except TooDeep:
        raise Problem(
            400,
            f"the request body is nested deeper than {MAX_JSON_DEPTH} levels",
            code="bad_request",
        ) from None
    except ValueError:
        raise Problem(400, "the request body is not valid JSON", code="bad_request") from None
    try:
        # Strict: JSON has types, so `false` is no stock and `"5"` no quantity.
        return model.model_validate(_integral_floats_as_ints(data), strict=True)
    except ValidationError as e:
        raise Problem(
            422, "the request body is invalid", code="invalid", errors=field_errors(e)
        ) from None


def read_query(request: web.Request, model: type[M], *, status: int = 422) -> M:
    """The query string as `model`, or a `status` problem; an empty parameter counts as left
    out, a repeated one as its first value."""
    data = {k: request.query.get(k) for k in request.query if request.query.get(k) != ""}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = [FieldError(path=f"query.{fe.path}", message=fe.message) for fe in field_errors(e)]
        names = ", ".join(sorted({fe.path.removeprefix("query.") for fe in errors}))
        code = "invalid" if status == 422 else "bad_request"
        raise Problem(
            status, f"invalid query parameter(s): {names}", code=code, errors=errors
        ) from None
