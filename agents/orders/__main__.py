"""`python -m agents.orders`: the orders worker."""

from agents.common.runtime import run_worker
from agents.common.settings import Settings
from agents.orders.app import bootstrap


def main() -> None:
    settings = Settings.from_env()
    app, runtime = bootstrap(settings)
    run_worker(app, runtime, settings)


if __name__ == "__main__":
    main()
