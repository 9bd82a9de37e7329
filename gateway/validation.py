"""Reading request bodies and query parameters, or answering 400/422 with field paths."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from gateway.problems import Problem
from topics.envelope import FieldError, field_errors

M = TypeVar("M", bound=BaseModel)


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
        data = json.loads(raw)
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
