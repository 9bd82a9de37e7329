"""What the end-to-end tests share to talk to the gateway."""

from __future__ import annotations

import subprocess
from typing import Any

import aiohttp

from tests.e2e.platform import SHOPSTREAM, Platform


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def dev_token(platform: Platform, role: str = "admin") -> str:
    """`shopstream dev-token` as a user runs it: its last line is the token."""
    out = subprocess.run(
        [SHOPSTREAM, "dev-token", "--role", role],
        env=platform.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return out.stdout.strip().splitlines()[-1]


async def call(
    http: aiohttp.ClientSession, method: str, url: str, status: int, **kw: Any
) -> dict[str, Any]:
    """One request that must answer `status`; an error must be problem+json."""
    async with http.request(method, url, **kw) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == status, body
        if status >= 400:
            assert resp.content_type == "application/problem+json"
            assert body["status"] == status
            assert body["error"] == body["detail"]
    return body


async def login(
    platform: Platform, http: aiohttp.ClientSession, email: str, password: str
) -> dict[str, Any]:
    """`POST /api/v1/auth/login`, which must succeed: the tokens."""
    return await call(
        http,
        "POST",
        f"{platform.url}/api/v1/auth/login",
        200,
        json={"email": email, "password": password},
    )
