"""`python -m agents.payments`: the payments worker."""

import sys

from agents.common.runtime import run_worker
from agents.common.settings import Settings, SettingsError
from agents.payments.app import bootstrap


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_internal_secret()
        settings.require_payment_secrets()
    except SettingsError as e:
        sys.exit(f"payments: {e}")
    app, runtime = bootstrap(settings)
    run_worker(app, runtime, settings)


if __name__ == "__main__":
    main()
