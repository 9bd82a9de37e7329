"""schemathesis hooks of tests/e2e/test_schemathesis.py, loaded through SCHEMATHESIS_HOOKS."""

from __future__ import annotations

import uuid
from typing import Any

import schemathesis

MAX_KEY = 255


@schemathesis.hook
def before_call(
    context: schemathesis.HookContext, case: schemathesis.Case[Any], **kwargs: Any
) -> None:
    """A fresh Idempotency-Key in place of each valid one schemathesis made up.

    It repeats the same few values across cases with other bodies, which the IETF draft answers
    with 422 (and with the same body, the first answer again, also for a product deleted since).
    Replays are tested in tests/e2e/test_idempotency.py. Negative cases are left as they are:
    an edit would make schemathesis revalidate one as positive, and send the header it left out."""
    headers = case.headers
    if headers is None or case.meta is None or case.meta.generation.mode.is_negative:
        return
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and 0 < len(key) <= MAX_KEY:
        headers["Idempotency-Key"] = uuid.uuid4().hex
