"""The users domain's mailers: the log one shows the link, the silent one never does."""

from __future__ import annotations

import logging

import pytest

from agents.common.settings import Settings, SettingsError
from agents.users.mail import LogMailer, NoMailer, create_mailer, verification_mail

ENV = {"JWT_SECRET": "k" * 64}
LINK = "http://127.0.0.1:8080/#/verify-email?token=secret-token"


async def test_the_log_mailer_writes_the_link(caplog: pytest.LogCaptureFixture) -> None:
    mailer = create_mailer(Settings.from_env(ENV))
    assert isinstance(mailer, LogMailer)
    with caplog.at_level(logging.INFO, logger="agents.users.mail"):
        await mailer.send(verification_mail("a@example.com", LINK))
    assert any(LINK in r.getMessage() and "a@example.com" in r.getMessage() for r in caplog.records)


async def test_mailer_none_logs_no_link(caplog: pytest.LogCaptureFixture) -> None:
    mailer = create_mailer(Settings.from_env({**ENV, "MAILER": "none"}))
    assert isinstance(mailer, NoMailer)
    with caplog.at_level(logging.INFO, logger="agents.users.mail"):
        await mailer.send(verification_mail("a@example.com", LINK))
    assert caplog.records
    assert not any("secret-token" in r.getMessage() for r in caplog.records)


def test_an_unknown_mailer_is_refused() -> None:
    with pytest.raises(SettingsError, match="MAILER"):
        Settings.from_env({**ENV, "MAILER": "smtp"})
