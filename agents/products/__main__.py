"""`python -m agents.products`: the catalogue worker."""

from agents.common.runtime import run_worker
from agents.common.settings import Settings
from agents.products.app import bootstrap


def main() -> None:
    settings = Settings.from_env()
    app, runtime = bootstrap(settings)
    run_worker(app, runtime, settings)


if __name__ == "__main__":
    main()
