"""Mail from the users domain (email verification), through a small Mailer interface."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from agents.common.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


class LogMailer:
    """Development: the mail, link included, is written to the log for its reader to follow."""

    async def send(self, mail: Mail) -> None:
        log.info("mail to %s: %s: %s", mail.to, mail.subject, mail.body)


class NoMailer:
    """Sends nothing, and logs only that a mail was dropped (never its link)."""

    async def send(self, mail: Mail) -> None:
        log.info("mail to %s not sent (MAILER=none): %s", mail.to, mail.subject)


def create_mailer(settings: Settings) -> Mailer:
    return LogMailer() if settings.mailer == "log" else NoMailer()


def verification_mail(to: str, link: str) -> Mail:
    return Mail(
        to=to,
        subject="Verify your email for shopstream",
        body=f"Open this link to verify your email address (it works once, for 24 hours): {link}",
    )
