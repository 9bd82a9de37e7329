"""`python -m agents.orders`: the orders worker."""

import sys

from agents.common.runtime import run_worker
from agents.common.settings import Settings, SettingsError
from agents.orders.app import bootstrap


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_internal_secret()
    except SettingsError as e:
        sys.exit(f"orders: {e}")
    app, runtime = bootstrap(settings)
    run_worker(app, runtime, settings)


if __name__ == "__main__":
    main()
