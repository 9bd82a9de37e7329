"""One platform for the session, run by `shopstream run` exactly as `make run` does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.platform import Platform, platform_env
from tests.infra import shared_tmpdir


@pytest.fixture(scope="session")
def platform() -> Iterator[Platform]:
    with shared_tmpdir("shopstream-e2e-") as state_dir:
        p = Platform(state_dir, platform_env(state_dir))
        p.start()
        try:
            yield p
        finally:
            code = p.stop()
        assert code == 0, "\n".join(p.lines[-50:])
        assert p.leftovers() == []
