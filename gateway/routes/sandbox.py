"""The sandbox payment provider's hosted page: the shopper approves or declines, and the page
reports the outcome on `payments.provider-events`, signed, as a real provider's webhook would.

Sessions are opened by the payments domain (agents/payments/providers.py); the session's token
in the page's address is the shopper's only key to it.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

import grpc
from aiohttp import web
from pydantic import BaseModel

from agents.payments.providers import SANDBOX_PAGE
from gateway.api import Operation, PathParam, Response, add_operations
from gateway.keys import BUS, GRPC, SETTINGS
from gateway.routes import grpc_options
from protos import payments_pb2
from topics import PAYMENTS_PROVIDER_EVENTS
from topics.envelope import Headers
from topics.payments import sign_report

# What a provider's session token looks like (the sandbox's: secrets.token_urlsafe); anything
# else is no session, and never asked for.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
EVENTS_NS = uuid.UUID("2b0f1d7e-4a55-4c1e-9a0b-7d8e3c5f6a21")
# The page loads nothing from anywhere, and its form posts only to itself.
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #eef1f5; color: #1c2430; }
main { max-width: 28rem; margin: 2rem auto; padding: 1.5rem; background: #fff;
       border-radius: 8px; box-shadow: 0 1px 4px rgb(0 0 0 / 15%); }
h1 { font-size: 1.3rem; margin-top: 0; }
dl { display: grid; grid-template-columns: auto 1fr; gap: .25rem 1rem; }
dt { font-weight: 600; }
.actions { display: flex; gap: 1rem; flex-wrap: wrap; margin-top: 1.5rem; }
button { font: inherit; padding: .6rem 1.2rem; border-radius: 6px; border: 2px solid #1c2430;
         cursor: pointer; }
button:focus-visible, a:focus-visible { outline: 3px solid #f5a623; outline-offset: 2px; }
.approve { background: #17663a; color: #fff; border-color: #17663a; }
.decline { background: #fff; color: #8a1c1c; border-color: #8a1c1c; }
.note { color: #4a5565; font-size: .9rem; }
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    document = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} - shopstream sandbox payments</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>{html.escape(title)}</h1>
{body}
</main>
</body>
</html>
"""
    return web.Response(
        text=document,
        status=status,
        content_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
    )


async def _session(request: web.Request) -> payments_pb2.PaymentSession | None:
    token = request.match_info["token"]
    if not TOKEN.fullmatch(token):
        return None
    try:
        session: payments_pb2.PaymentSession = await request.app[GRPC].payments.GetSession(
            payments_pb2.GetSessionRequest(token=token), **grpc_options(request)
        )
    except grpc.aio.AioRpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None
    return session


def _closed(session: payments_pb2.PaymentSession | None) -> web.Response | None:
    """The page of a session that can no longer be paid, or None while it can."""
    if session is None:
        return _page("Payment not found", "<p>This payment link is not valid.</p>", 404)
    back = f'<p><a href="{html.escape(session.return_path)}">Back to the shop</a></p>'
    if session.payment_status != "pending":
        words = "paid" if session.payment_status == "succeeded" else "closed"
        return _page(f"This payment is {words}", f"<p>Nothing more to do here.</p>{back}", 409)
    if session.expires_at.ToDatetime(tzinfo=UTC) <= datetime.now(UTC):
        return _page("This payment has expired", back, 410)
    return None


async def hosted_page(request: web.Request) -> web.Response:
    session = await _session(request)
    if (closed := _closed(session)) is not None:
        return closed
    assert session is not None
    amount = f"{Decimal(session.amount):.2f}"
    expires = session.expires_at.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = f"""
<p>shopstream asks you to pay for order {session.order_id}.</p>
<dl>
<dt>Amount</dt><dd id="amount">{amount}</dd>
<dt>Order</dt><dd>{session.order_id}</dd>
<dt>Pay before</dt><dd>{expires}</dd>
</dl>
<form method="post">
<div class="actions">
<button class="approve" type="submit" name="decision" value="approve">Approve payment</button>
<button class="decline" type="submit" name="decision" value="decline">Decline</button>
</div>
</form>
<p class="note">This is the sandbox provider: no money moves.</p>
"""
    return _page("Sandbox payment", body)


async def decide(request: web.Request) -> web.Response:
    """Report the shopper's decision, then send them back to the shop. A second submit of the
    same decision is the same report (same event id), applied once."""
    try:
        decision = (await request.post()).get("decision")
    except ValueError:  # a body that is no form (undecodable, a multipart without boundary)
        decision = None
    if decision not in ("approve", "decline"):
        return _page("Choose approve or decline", "<p>Go back and choose.</p>", 422)
    session = await _session(request)
    if (closed := _closed(session)) is not None:
        return closed
    assert session is not None
    approved = decision == "approve"
    report = sign_report(
        {
            "event_id": str(uuid.uuid5(EVENTS_NS, f"{session.token}:{decision}")),
            "payment_id": session.payment_id,
            "outcome": "succeeded" if approved else "failed",
            "amount": session.amount,
            "reference": f"sandbox:{session.token[:16]}",
            "reason": "" if approved else "declined by the shopper",
            "provider": "sandbox",
            "session_reference": session.reference,
        },
        request.app[SETTINGS].payments.secrets["sandbox"],
    )
    await request.app[BUS].publish(
        PAYMENTS_PROVIDER_EVENTS.name,
        str(session.payment_id),
        report.model_dump_json().encode(),
        headers=[(Headers.TYPE, report.type.encode())],
    )
    raise web.HTTPSeeOther(session.return_path)


class Decision(BaseModel):
    """The hosted page's form."""

    decision: Literal["approve", "decline"]


PATH = SANDBOX_PAGE + "{token}"
SESSION_TOKEN = PathParam("token", {"type": "string", "pattern": f"^{TOKEN.pattern}$"})
HTML = "text/html"
CLOSED = {
    404: Response("no such session: a page saying so", media_type=HTML),
    409: Response("paid or closed: a page saying so", media_type=HTML),
    410: Response("expired: a page saying so", media_type=HTML),
}

OPERATIONS = (
    Operation(
        "GET",
        PATH,
        hosted_page,
        "The sandbox provider's hosted payment page: the amount, approve or decline",
        {200: Response("the page", media_type=HTML), **CLOSED},
        (429, 503, 504),
        path_params=(SESSION_TOKEN,),
    ),
    Operation(
        "POST",
        PATH,
        decide,
        "Approve or decline: reported, signed, on payments.provider-events; then back to the shop",
        {
            303: Response(
                "reported: back to the shop", media_type="", headers={"Location": "the shop"}
            ),
            **CLOSED,
            422: Response("neither approve nor decline: a page saying so", media_type=HTML),
        },
        (413, 429, 503, 504),
        body=Decision,
        body_media_type="application/x-www-form-urlencoded",
        path_params=(SESSION_TOKEN,),
    ),
)


def setup_routes(app: web.Application) -> None:
    add_operations(app, OPERATIONS)
