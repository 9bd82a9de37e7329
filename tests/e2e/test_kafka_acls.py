"""The whole checkout under the ACLs of `shopstream topics acls`, each process its own principal.

Apache Kafka with the StandardAuthorizer (nothing allowed without an ACL) and a SCRAM user per
process; the ACLs and then every topic are created as the hook job would (the admin principal),
the four workers and the gateway run as themselves. A buyer registers, an admin adds products, the
buyer orders and pays: every hop of the saga (commands, events, replies, DLQ-free tables) works
with only its process's ACLs, and no process logs an authorization failure.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.common.embedded import port_open
from agents.common.kafka import KafkaCluster
from agents.common.migrate import migrate
from agents.common.settings import KafkaSecurity, Settings
from tests.e2e.saga_world import (
    BUYERS_ENV,
    DOMAINS,
    Proc,
    World,
    _wait_serving,
    create_products,
    http_client,
    new_buyer,
    pay,
    retry_until,
    settle_and_check,
)
from tests.helpers import eventually
from tests.infra import base_env, kafka_env, running_postgres, shared_tmpdir
from topics import all_topics
from topics.acls import create_acls, default_principals
from topics.admin import ensure_topics

pytestmark = pytest.mark.e2e

PASSWORD = "test-only-acl-password"
USERS = {role: p.removeprefix("User:") for role, p in default_principals().items()}


def sasl_env(role: str) -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": USERS[role],
        "KAFKA_SASL_PASSWORD": PASSWORD,
    }


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with (
        running_postgres() as pg,
        shared_tmpdir("shopstream-acls-") as tmp,
    ):
        cluster = KafkaCluster(
            tmp / "kafka", nodes=1, sasl_users=dict.fromkeys(USERS.values(), PASSWORD), acls=True
        )
        w: World | None = None
        try:
            cluster.start()
            asyncio.run(migrate(pg.dsn))
            asyncio.run(create_acls(cluster.bootstrap, default_principals()))
            common = base_env(pg.dsn, cluster.sasl_bootstrap, tmp) | kafka_env(cluster)
            common |= {"KAFKA_BROKER": cluster.sasl_bootstrap, **BUYERS_ENV}
            admin = common | sasl_env("admin")
            asyncio.run(
                ensure_topics(
                    cluster.sasl_bootstrap,
                    all_topics(),
                    replication=1,
                    security=_security(admin),
                )
            )
            w = World(common, pg, cluster)
            for name in DOMAINS:
                env = common | sasl_env(name)
                w.procs[name] = Proc(name, f"agents.{name}", env, tmp / f"{name}.log")
            gateway_env = common | sasl_env("gateway") | {"GATEWAY_INSTANCE": uuid.uuid4().hex[:8]}
            w.procs["gateway"] = Proc("gateway", "gateway", gateway_env, tmp / "gateway.log")
            w.urls["gateway"] = f"http://127.0.0.1:{common['GATEWAY_PORT']}"
            for p in w.procs.values():
                p.start()
            for name in DOMAINS:
                _wait_serving(w.grpc_addr(name), w.procs[name])
            deadline = time.monotonic() + 60
            while not port_open(int(common["GATEWAY_PORT"])):
                assert w.procs["gateway"].running, w.procs["gateway"].log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.05)
            yield w
        finally:
            if w is not None:
                for p in w.procs.values():
                    p.terminate()
                for p in w.procs.values():
                    p.stop()
            cluster.stop()


def _security(env: dict[str, str]) -> KafkaSecurity:
    return Settings.from_env(env).kafka_security


def authorization_failures(log: Path) -> list[str]:
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if "AuthorizationFailed" in line or "not authorized" in line.lower()
    ]


@pytest.mark.timeout(300)
async def test_a_checkout_runs_with_each_process_as_its_own_principal(world: World) -> None:
    async with http_client() as http:
        products = await create_products(world, http, f"acl{uuid.uuid4().hex[:6]}")
        buyer = await new_buyer(world.url, http)
        key = uuid.uuid4().hex
        status, body = await retry_until(
            http,
            "POST",
            f"{world.url}/order/",
            {201, 202},
            headers={**buyer, "Idempotency-Key": key},
            json={"items": [{"product_id": products[0], "quantity": 1}]},
            deadline_s=60,
        )
        if status == 202:

            async def decided() -> dict[str, Any] | None:
                _, order = await retry_until(
                    http, "GET", f"{world.url}{body['location']}", {200, 404}, headers=buyer
                )
                return order if order.get("status", "pending") != "pending" else None

            order_id = int((await eventually(decided, timeout=60, what="the order"))["id"])
        else:
            order_id = int(body["order"]["id"])
        await pay(world.url, http, buyer, order_id, key, deadline_s=60)

        async def paid() -> bool:
            _, got = await retry_until(
                http, "GET", f"{world.url}/order/{order_id}", {200}, headers=buyer
            )
            return str(got["order"]["status"]) == "paid"

        await eventually(paid, timeout=60, what="the order paid")
    await settle_and_check(world, {order_id}, products, timeout=60)
    for p in world.procs.values():
        assert p.running, f"{p.name} died:\n{p.log.read_text()[-3000:]}"
        assert authorization_failures(p.log) == [], p.name
