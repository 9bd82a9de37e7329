"""Amounts of money on the wire: at most two decimal places, as a JSON number or a string."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
# How far a float may be from the float of a cent and still mean it: sums such as 0.1 + 0.2
# land a few units in the last place away.
FLOAT_NOISE_ULPS = 4


def from_json_number(value: object) -> object:
    """An amount as a Decimal, from a JSON number or a numeric string; anything else is left
    for the field to refuse. A JSON number is a binary float, so 0.57 may arrive as
    0.5700000000000001: within rounding noise of a cent, it is that cent."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return value
        return parsed if parsed.is_finite() else value
    if isinstance(value, float) and math.isfinite(value):
        exact = Decimal(repr(value))
        try:
            cents = exact.quantize(CENT)
        except InvalidOperation:
            return exact
        if abs(value - float(cents)) <= FLOAT_NOISE_ULPS * math.ulp(value):
            return cents
        return exact
    return value


def amount_schema(maximum: str) -> dict[str, Any]:
    """The JSON Schema of an amount from 0 to `maximum`, as validation reads it."""
    digits = len(maximum.split(".")[0])
    return {
        "anyOf": [
            {"type": "number", "minimum": 0, "maximum": float(maximum), "multipleOf": 0.01},
            {"type": "string", "pattern": rf"^\d{{1,{digits}}}(\.\d{{1,2}})?$"},
        ]
    }
