"""One platform for the session, run by `shopstream run` exactly as `make run` does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.e2e.client import bearer, dev_token
from tests.e2e.platform import Platform, platform_env
from tests.fake_oauth import FakeProvider, fake_provider
from tests.infra import kafka_env, running_kafka, shared_tmpdir

# Many logins come from one address here; the limits themselves are tested in tests/unit.
GENEROUS_LIMITS = {
    "RATE_LIMIT_AUTH_PER_MIN": "100000",
    "RATE_LIMIT_IP_PER_MIN": "100000",
    "RATE_LIMIT_USER_PER_MIN": "100000",
    # Short enough for the expiry test to see a payment expire.
    "PAYMENT_TTL_S": "8",
}


@pytest.fixture(scope="session")
async def oauth_provider() -> AsyncIterator[FakeProvider]:
    async with fake_provider(redirect_base="") as fake:
        yield fake


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=300)
    timeout = aiohttp.ClientTimeout(total=30)
    # A browser keeps cookies (an OAuth login's nonce); aiohttp's default jar drops those of an
    # address like 127.0.0.1 unless it is "unsafe".
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, cookie_jar=jar
    ) as session:
        yield session


@pytest.fixture(scope="module")
def admin(platform: Platform) -> dict[str, str]:
    return bearer(dev_token(platform, "admin"))


@pytest.fixture(scope="session", params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The broker the platform runs on: the embedded Tansu of `make run`, or a 3-node Apache
    Kafka cluster (replication 3, min.insync.replicas 2) that `shopstream run` is pointed at."""
    if request.param == "tansu":
        yield {}
        return
    with running_kafka(3) as cluster:
        yield kafka_env(cluster)


@pytest.fixture(scope="session")
def platform(oauth_provider: FakeProvider, broker: dict[str, str]) -> Iterator[Platform]:
    with shared_tmpdir("shopstream-e2e-") as state_dir:
        env = platform_env(state_dir)
        p = Platform(state_dir, env)
        oauth_provider.redirect_base = p.url
        env |= oauth_provider.env() | GENEROUS_LIMITS | broker
        p.start()
        try:
            yield p
        finally:
            code = p.stop()
        assert code == 0, "\n".join(p.lines[-50:])
        assert p.leftovers() == []
