"""`python -m gateway`: serve the REST gateway."""

from __future__ import annotations

import asyncio
import sys

from agents.common.logs import setup_logging
from agents.common.settings import Settings, SettingsError
from gateway.app import create_app
from gateway.server import serve


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_jwt_secret()
        settings.require_internal_secret()
        settings.require_payment_secrets()
    except SettingsError as e:
        sys.exit(f"gateway: {e}")
    setup_logging("gateway", settings.log_level, settings.log_format)
    asyncio.run(serve(create_app(settings), settings.listen_host, settings.gateway_port))


if __name__ == "__main__":
    main()
