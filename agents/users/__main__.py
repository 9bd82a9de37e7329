"""`python -m agents.users`: the users worker."""

from agents.common.runtime import run_worker
from agents.common.settings import Settings
from agents.users.app import bootstrap


def main() -> None:
    settings = Settings.from_env()
    app, runtime = bootstrap(settings)
    run_worker(app, runtime, settings)


if __name__ == "__main__":
    main()
