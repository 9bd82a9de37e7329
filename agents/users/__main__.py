"""`python -m agents.users`: the users worker."""

import sys

from agents.common.runtime import run_worker
from agents.common.settings import Settings, SettingsError
from agents.users.app import bootstrap


def main() -> None:
    try:
        settings = Settings.from_env()
        settings.require_jwt_secret()
        settings.require_internal_secret()
    except SettingsError as e:
        sys.exit(f"users: {e}")
    app, runtime = bootstrap(settings)
    run_worker(app, runtime, settings)


if __name__ == "__main__":
    main()
