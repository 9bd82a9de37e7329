"""`shopstream run` stops cleanly on Ctrl-C and keeps its data across a restart, on Tansu and on
the Apache Kafka it starts with `--broker kafka` (whose topics outlive it too)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request

import pytest

from agents.common.embedded import port_open
from tests.e2e.platform import SHOPSTREAM, Platform, platform_env
from tests.infra import shared_tmpdir
from tests.integration.reliability import read_topic
from topics import PRODUCTS_EVENTS

pytestmark = pytest.mark.e2e


def _http(method: str, url: str, body: object = None, token: str = "") -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=15) as resp:
        return json.loads(resp.read())


def _broker_ports(p: Platform) -> list[int]:
    return [int(a.rsplit(":", 1)[1]) for a in p.kafka.split(",")]


# Two starts of a JVM broker: slower than Tansu's.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("broker", ["tansu", "kafka"])
def test_data_survives_a_restart_and_nothing_is_left_behind(broker: str) -> None:
    with shared_tmpdir("shopstream-restart-") as state_dir:
        p = Platform(state_dir, platform_env(state_dir))
        p.start("--no-demo", "--broker", broker)
        broker_ports = _broker_ports(p)
        try:
            token = subprocess.run(
                [SHOPSTREAM, "dev-token"],
                env=p.env,
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.splitlines()[-1]
            created = _http(
                "POST", f"{p.url}/product/", {"name": "Kept", "price": 1, "stock": 1}, token
            )
            assert isinstance(created, dict)
        finally:
            assert p.stop() == 0
        assert p.listening() == []
        assert [port for port in broker_ports if port_open(port)] == []
        assert p.leftovers() == []
        assert any("stopped" in line for line in p.lines)

        p.start("--no-demo", "--broker", broker)
        try:
            if broker == "kafka":
                events = asyncio.run(read_topic(p.kafka, PRODUCTS_EVENTS.name))
                assert any(b"Kept" in (e.value or b"") for e in events)
            got = _http("GET", f"{p.url}/api/v1/products/{created['id']}")
            assert isinstance(got, dict)
            assert got["name"] == "Kept"
            page = _http("GET", f"{p.url}/product/?page=0")
            assert isinstance(page, dict)
            assert page["total"] == 1
        finally:
            assert p.stop() == 0
        assert p.listening() == []
        assert p.leftovers() == []
