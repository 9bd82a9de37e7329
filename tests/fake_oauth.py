"""A fake OAuth2 provider on loopback speaking the Google, Facebook and GitHub shapes.

It checks what a real provider checks: client credentials, the exact redirect URI, single-use
codes, and PKCE S256 (the verifier must hash to the challenge given at authorization).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from agents.common.embedded import free_port

PROVIDERS = ("google", "facebook", "github")
CLIENT_SECRET = "fake-client-secret"


@dataclass
class Grant:
    provider: str
    challenge: str
    redirect_uri: str
    profile: dict[str, Any]


@dataclass
class FakeProvider:
    port: int
    redirect_base: str
    # What the next login at each provider returns as its user's profile.
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    access: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_id(self, provider: str) -> str:
        return f"{provider}-client"

    def redirect_uri(self, provider: str) -> str:
        return f"{self.redirect_base}/api/v1/oauth/{provider}/callback"

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for p in PROVIDERS:
            up = p.upper()
            env |= {
                f"{up}_CLIENT_ID": self.client_id(p),
                f"{up}_CLIENT_SECRET": CLIENT_SECRET,
                f"{up}_REDIRECT_URL": self.redirect_uri(p),
                f"{up}_AUTHORIZE_URL": f"{self.base}/{p}/authorize",
                f"{up}_TOKEN_URL": f"{self.base}/{p}/token",
                f"{up}_USERINFO_URL": f"{self.base}/{p}/userinfo",
            }
        env["GITHUB_EMAILS_URL"] = f"{self.base}/github/emails"
        return env

    async def authorize(self, request: web.Request) -> web.Response:
        provider, q = request.match_info["provider"], request.query
        if q.get("client_id") != self.client_id(provider):
            return web.json_response({"error": "invalid_client"}, status=400)
        if q.get("redirect_uri") != self.redirect_uri(provider):
            return web.json_response({"error": "redirect_uri_mismatch"}, status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            provider, q["code_challenge"], q["redirect_uri"], self.profiles.get(provider, {})
        )
        location = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        raise web.HTTPFound(location)

    async def token(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        form = await request.post()
        grant = self.grants.pop(str(form.get("code", "")), None)
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        if form.get("client_id") != self.client_id(provider) or (
            form.get("client_secret") != CLIENT_SECRET
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        if grant is None or grant.provider != provider:
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("redirect_uri") != grant.redirect_uri or challenge != grant.challenge:
            return web.json_response({"error": "invalid_grant"}, status=400)
        access_token = secrets.token_urlsafe(16)
        self.access[access_token] = grant.profile
        return web.json_response(
            {"access_token": access_token, "token_type": "bearer", "expires_in": 3600}
        )

    def _profile(self, request: web.Request) -> dict[str, Any]:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if token not in self.access:
            raise web.HTTPUnauthorized()
        return self.access[token]

    async def userinfo(self, request: web.Request) -> web.Response:
        profile = self._profile(request)
        provider = request.match_info["provider"]
        body: dict[str, Any]
        if provider == "google":
            body = {
                k: profile[k] for k in ("sub", "email", "email_verified", "name") if k in profile
            }
        elif provider == "facebook":
            body = {k: profile[k] for k in ("id", "name", "email") if k in profile}
        else:
            body = {
                "id": profile["id"],
                "login": profile.get("login", "octo"),
                "name": profile.get("name"),
                "email": None,
            }
        return web.json_response(body)

    async def emails(self, request: web.Request) -> web.Response:
        return web.json_response(self._profile(request).get("emails", []))


@asynccontextmanager
async def fake_provider(redirect_base: str) -> AsyncIterator[FakeProvider]:
    fake = FakeProvider(port=free_port(), redirect_base=redirect_base)
    app = web.Application()
    app.router.add_get("/{provider}/authorize", fake.authorize)
    app.router.add_post("/{provider}/token", fake.token)
    app.router.add_get("/{provider}/userinfo", fake.userinfo)
    app.router.add_get("/github/emails", fake.emails)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", fake.port)
    await site.start()
    try:
        yield fake
    finally:
        await runner.cleanup()
