"""`python -m gateway`: serve the REST gateway."""

from __future__ import annotations

import sys

from aiohttp import web

from agents.common.logs import setup_logging
from agents.common.settings import Settings, SettingsError
from gateway.app import create_app

MAX_LINE_BYTES = 65536


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_jwt_secret()
        settings.require_internal_secret()
        settings.require_payment_secrets()
    except SettingsError as e:
        sys.exit(f"gateway: {e}")
    setup_logging("gateway", settings.log_level, settings.log_format)
    web.run_app(
        create_app(settings),
        host=settings.listen_host,
        port=settings.gateway_port,
        access_log=None,
        print=None,
        shutdown_timeout=5,
        # Room for the longest query an OAuth callback may carry, percent-encoded.
        max_line_size=MAX_LINE_BYTES,
    )


if __name__ == "__main__":
    main()
