"""Payment providers: a session on the provider's side for a payment, paid on its own page.

A provider is told the payment's amount (the server's, never the client's) and the reference the
platform issued for the session, and answers with a session: a token, the URL of its hosted page
and an expiry. It reports the outcome later on `payments.provider-events`, for that reference,
signed with the secret it alone shares with the platform.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol
from urllib.parse import quote

from agents.common.settings import PaymentSettings
from topics.payments import ProviderPaymentOutcome

SANDBOX_PAGE = "/sandbox/pay/"


def new_reference() -> str:
    """A session's reference, issued by the platform: reports must carry it."""
    return "ps_" + secrets.token_urlsafe(18)


@dataclass(frozen=True)
class SessionRequest:
    payment_id: int
    order_id: int
    amount: Decimal
    expires_at: datetime
    reference: str = ""
    customer_name: str = ""
    customer_email: str = ""
    payment_method: str = ""


@dataclass(frozen=True)
class ProviderSession:
    token: str
    redirect_url: str
    expires_at: datetime
    va_number: str = ""
    qr_code_url: str = ""


class PaymentProvider(Protocol):
    name: str

    async def create_session(self, request: SessionRequest) -> ProviderSession: ...

    def verify(self, report: ProviderPaymentOutcome) -> bool: ...


class SandboxProvider:
    """The built-in provider: its hosted page is served by the gateway (gateway/routes/
    sandbox.py), where the shopper approves or declines; it then reports like any other."""

    name = "sandbox"

    def __init__(self, settings: PaymentSettings, secret: str) -> None:
        self._public_url = settings.public_url
        self._secret = secret

    async def create_session(self, request: SessionRequest) -> ProviderSession:
        token = secrets.token_urlsafe(24)
        return ProviderSession(
            token=token,
            redirect_url=f"{self._public_url}{SANDBOX_PAGE}{quote(token)}",
            expires_at=request.expires_at,
        )

    def verify(self, report: ProviderPaymentOutcome) -> bool:
        return report.signed_by(self._secret)


class ProviderFactory(Protocol):
    def __call__(self, settings: PaymentSettings, secret: str) -> PaymentProvider: ...


# Every provider the platform can open sessions with (settings.PAYMENT_PROVIDERS names them).
REGISTRY: dict[str, ProviderFactory] = {"sandbox": SandboxProvider}


def providers(settings: PaymentSettings) -> dict[str, PaymentProvider]:
    """Every provider the platform knows, by name, each with its own secret (none: it verifies
    nothing)."""
    secrets_ = settings.secrets
    return {name: make(settings, secrets_.get(name, "")) for name, make in REGISTRY.items()}
