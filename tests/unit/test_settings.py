"""Settings from the environment."""

from __future__ import annotations

import pytest

from agents.common.settings import Settings, SettingsError

SECRET = "s" * 32


def test_defaults_are_the_seed_ports() -> None:
    s = Settings.from_env({"JWT_SECRET": SECRET})
    assert s.gateway_port == 8080
    assert [s.grpc.port_of(d) for d in ("users", "products", "orders", "payments")] == [
        50001,
        40001,
        30001,
        60001,
    ]
    assert s.kafka.fetch_max_wait_ms == 10


def test_values_are_read_and_typed() -> None:
    s = Settings.from_env(
        {
            "JWT_SECRET": SECRET,
            "GATEWAY_PORT": "9000",
            "PRODUCT_SERVICE_ADDR": "products:41000",
            "KAFKA_FETCH_MAX_WAIT_MS": "5",
            "REQUEST_TIMEOUT_S": "2.5",
        }
    )
    assert s.gateway_port == 9000
    assert s.grpc.port_of("products") == 41000
    assert s.kafka.fetch_max_wait_ms == 5
    assert s.request_timeout_s == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GATEWAY_PORT", "eighty"),
        ("PRODUCT_SERVICE_ADDR", "products"),
        ("KAFKA_FETCH_MAX_WAIT_MS", "1"),
        ("JWT_SECRET", "short"),
        ("LOG_FORMAT", "xml"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(name: str, value: str) -> None:
    env = {"JWT_SECRET": SECRET, name: value}
    with pytest.raises(SettingsError):
        Settings.from_env(env)
