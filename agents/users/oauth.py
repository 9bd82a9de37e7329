"""OAuth2 authorization-code logins with PKCE S256: Google, Facebook and GitHub."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
from authlib.common.errors import AuthlibBaseError
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from agents.common.settings import OAuthProvider
from agents.users.errors import OAuthFailed

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Profile:
    provider_id: str
    name: str
    # Only an address the provider says is verified; None otherwise.
    verified_email: str | None


def new_state() -> str:
    return str(generate_token(43))


def new_code_verifier() -> str:
    return str(generate_token(64))


def _client(provider: OAuthProvider, **kw: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        scope=provider.scope,
        redirect_uri=provider.redirect_url,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_post",
        timeout=TIMEOUT_S,
        **kw,
    )


def authorization_url(provider: OAuthProvider, state: str, verifier: str) -> str:
    client = _client(provider)
    url, _ = client.create_authorization_url(
        provider.authorize_url, state=state, code_verifier=verifier
    )
    return str(url)


async def fetch_profile(provider: OAuthProvider, code: str, verifier: str) -> Profile:
    """Exchange the code (with the PKCE verifier) and read who logged in."""
    try:
        async with _client(provider) as client:
            await client.fetch_token(
                provider.token_url,
                code=code,
                code_verifier=verifier,
                headers={"Accept": "application/json"},
            )
            info = await _get_json(client, provider.userinfo_url)
            if provider.name == "google":
                return Profile(
                    provider_id=str(info["sub"]),
                    name=str(info.get("name") or ""),
                    verified_email=info.get("email") if info.get("email_verified") else None,
                )
            if provider.name == "facebook":
                # Facebook only hands out an address its user has confirmed.
                return Profile(str(info["id"]), str(info.get("name") or ""), info.get("email"))
            if provider.name == "github":
                emails = await _get_json(client, provider.emails_url)
                primary = next(
                    (e["email"] for e in emails if e.get("primary") and e.get("verified")), None
                )
                name = info.get("name") or info.get("login") or ""
                return Profile(str(info["id"]), str(name), primary)
    except (AuthlibBaseError, httpx2.HTTPError, KeyError, TypeError, ValueError) as e:
        raise OAuthFailed(f"{provider.name} login failed: {e}") from None
    raise OAuthFailed(f"unknown provider {provider.name}")


async def _get_json(client: AsyncOAuth2Client, url: str) -> Any:
    response = await client.get(url, headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise ValueError(f"{url} answered {response.status_code}")
    return response.json()
