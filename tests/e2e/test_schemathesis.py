"""schemathesis over every operation of /openapi.json, against the real platform, all checks."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.client import login
from tests.e2e.platform import SHOPSTREAM, Platform

pytestmark = pytest.mark.e2e

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HOOKS = str(Path(__file__).with_name("schemathesis_hooks.py"))
RUN_TIMEOUT_S = 240
# Every check on every operation, with a fresh Idempotency-Key on each request (see
# schemathesis_hooks.py). (`--checks all` would also run the checks that are off by default; the
# configuration file keeps the choice here.)
CONFIG = """
[checks]
enabled = true
"""


async def admin_token(platform: Platform, http: aiohttp.ClientSession) -> str:
    """An admin account's token (a dev token has no account, so its orders would all be 403)."""
    email, password = f"admin-{uuid.uuid4().hex[:10]}@example.com", "schemathesis-password"
    proc = await asyncio.create_subprocess_exec(
        SHOPSTREAM,
        "users",
        "create-admin",
        "--email",
        email,
        "--password-stdin",
        env=platform.env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(f"{password}\n".encode()), 60)
    assert proc.returncode == 0, out.decode()
    tokens = await login(platform, http, email, password)
    return str(tokens["token"])


# One platform is enough: the document and the handlers are the broker's business nowhere.
@pytest.mark.parametrize("broker", ["tansu"], indirect=True, scope="session")
@pytest.mark.timeout(RUN_TIMEOUT_S + 60)
async def test_every_operation_keeps_to_the_document(
    platform: Platform, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    token = await admin_token(platform, http)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    args = [
        SCHEMATHESIS,
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{platform.url}/openapi.json",
        # Every phase: examples, coverage (boundaries, missing and wrong parameters, methods not
        # in the document), fuzzing, and stateful (links schemathesis infers between operations).
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "15",
        "--seed",
        "20260102",
        # One worker: hypothesis describes strategies with ast.parse, which CPython 3.11 can
        # fail in concurrent threads ("AST constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        "--generation-database",
        "none",
    ]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": HOOKS},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.out").write_text(text)
    assert proc.returncode == 0, text[-30000:]
