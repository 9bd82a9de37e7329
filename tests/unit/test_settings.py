"""Settings from the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agents.common import tokens
from agents.common.settings import Settings, SettingsError
from agents.supervisor import jwt_secret, local_secrets, sandbox_secret

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


@pytest.mark.parametrize(
    "env",
    [
        {"GOOGLE_CLIENT_ID": "id"},
        {"GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "s", "GITHUB_REDIRECT_URL": "ftp://x"},
        {"ARGON2_MEMORY_KIB": "19455"},
        {"ARGON2_TIME_COST": "1"},
        {"REFRESH_TOKEN_TTL_S": "60"},
        {"REFRESH_REUSE_LEEWAY_S": "-1"},
        {"LOGIN_FAILURES_PER_EMAIL": "0"},
        {"LOGIN_FAILURE_WINDOW_S": "0"},
        {"LOGIN_FAILURE_WINDOW_S": "a while"},
        {"RATE_LIMIT_MAX_KEYS": "0"},
        {"RATE_LIMIT_AUTH_PER_MIN": "0"},
        {"TRUSTED_PROXIES": "not-an-ip"},
    ],
)
def test_identity_and_edge_settings_are_checked(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"JWT_SECRET": SECRET, **env})


def test_cors_origins_are_normalised() -> None:
    s = Settings.from_env({"JWT_SECRET": SECRET, "CORS_ORIGINS": "https://a.example/, b"})
    assert s.edge.cors_origins == ("https://a.example", "b")
    assert "http://localhost:8080" in Settings.from_env({"JWT_SECRET": SECRET}).edge.cors_origins


def test_the_sandbox_provider_has_no_default_secret() -> None:
    """No key is shared by every install: without SANDBOX_PROVIDER_SECRET the processes that
    sign and check provider reports refuse to start (shopstream run makes one)."""
    unset = Settings.from_env({"JWT_SECRET": SECRET})
    assert unset.payments.provider == "sandbox"
    assert unset.payments.sandbox_secret == ""
    with pytest.raises(SettingsError, match="SANDBOX_PROVIDER_SECRET is not set"):
        unset.require_payment_secrets()
    with pytest.raises(SettingsError, match="at least 32"):
        Settings.from_env({"JWT_SECRET": SECRET, "SANDBOX_PROVIDER_SECRET": "short"})
    set_ = Settings.from_env({"JWT_SECRET": SECRET, "SANDBOX_PROVIDER_SECRET": "p" * 32})
    set_.require_payment_secrets()
    assert "p" * 32 not in repr(set_)


@pytest.mark.parametrize("module", ["gateway", "agents.payments"])
def test_gateway_and_payments_refuse_to_start_without_the_sandbox_secret(
    module: str, tmp_path: Path
) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", module],
        env={
            **env,
            "JWT_SECRET": SECRET,
            "INTERNAL_SECRET": SECRET,
            "SHOPSTREAM_STATE_DIR": str(tmp_path),
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "SANDBOX_PROVIDER_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_shopstream_run_makes_the_sandbox_secret_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secret = sandbox_secret(state)
    assert len(secret) >= 32
    assert Settings.from_env({"JWT_SECRET": SECRET, "SANDBOX_PROVIDER_SECRET": secret})
    assert sandbox_secret(state) == secret, "kept across restarts"
    (path,) = state.iterdir()
    assert path.stat().st_mode & 0o777 == 0o600
    assert sandbox_secret(tmp_path / "other") != secret, "one per machine, not one for all"


def test_the_login_budget_is_read_and_defaults_to_10_in_15_minutes() -> None:
    auth = Settings.from_env({"JWT_SECRET": SECRET}).auth
    assert (auth.login_failures_per_email, auth.login_failure_window_s) == (10, 900.0)
    env = {"JWT_SECRET": SECRET, "LOGIN_FAILURES_PER_EMAIL": "5", "LOGIN_FAILURE_WINDOW_S": "60"}
    auth = Settings.from_env(env).auth
    assert (auth.login_failures_per_email, auth.login_failure_window_s) == (5, 60.0)


def test_the_jwt_and_internal_secrets_have_no_default() -> None:
    """No key is shared by every install: a process that needs one refuses to start without it."""
    unset = Settings.from_env({})
    assert (unset.jwt_secret, unset.internal_secret) == ("", "")
    with pytest.raises(SettingsError, match="JWT_SECRET is not set"):
        unset.require_jwt_secret()
    with pytest.raises(SettingsError, match="INTERNAL_SECRET is not set"):
        unset.require_internal_secret()
    with pytest.raises(SettingsError, match="JWT_SECRET is not set"):
        tokens.mint(unset, sub="1", typ="access", ttl_s=60, role="user")
    for name in ("JWT_SECRET", "INTERNAL_SECRET"):
        with pytest.raises(SettingsError, match=f"{name} must be at least 32"):
            Settings.from_env({name: "short"})
    set_ = Settings.from_env({"JWT_SECRET": "j" * 32, "INTERNAL_SECRET": "i" * 32})
    assert (set_.require_jwt_secret(), set_.require_internal_secret()) == ("j" * 32, "i" * 32)
    assert "j" * 32 not in repr(set_)
    assert "i" * 32 not in repr(set_)


# Each process needs the secrets it signs or checks with: the gateway and the users worker the
# JWT key (they check and mint tokens) and all of them the internal one.
NEEDS = {
    "gateway": ("JWT_SECRET", "INTERNAL_SECRET"),
    "agents.users": ("JWT_SECRET", "INTERNAL_SECRET"),
    "agents.products": ("INTERNAL_SECRET",),
    "agents.orders": ("INTERNAL_SECRET",),
    "agents.payments": ("INTERNAL_SECRET",),
}


@pytest.mark.parametrize(
    ("module", "missing"), [(m, name) for m, names in NEEDS.items() for name in names]
)
def test_every_process_refuses_to_start_without_its_secrets(
    module: str, missing: str, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SHOPSTREAM_STATE_DIR": str(tmp_path),
        "JWT_SECRET": SECRET,
        "INTERNAL_SECRET": "i" * 32,
        "SANDBOX_PROVIDER_SECRET": "p" * 32,
    }
    del env[missing]
    done = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"{missing} is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_shopstream_run_makes_the_jwt_and_internal_secrets_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    made = local_secrets({}, state)
    assert set(made) == {"JWT_SECRET", "INTERNAL_SECRET", "SANDBOX_PROVIDER_SECRET"}
    settings = Settings.from_env(made)
    assert len(settings.require_jwt_secret()) >= 32
    assert len(settings.require_internal_secret()) >= 32
    assert len(set(made.values())) == 3, "one secret per purpose"
    assert local_secrets({}, state) == made, "kept across restarts"
    for path in state.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert jwt_secret(tmp_path / "other") != made["JWT_SECRET"], "one per machine"
    given = {"JWT_SECRET": "g" * 32, "INTERNAL_SECRET": "h" * 32}
    assert set(local_secrets(given, state)) == {"SANDBOX_PROVIDER_SECRET"}, "given ones are kept"


def test_dev_token_signs_with_the_key_shopstream_run_keeps(tmp_path: Path) -> None:
    """`shopstream dev-token` on the laptop finds the key `shopstream run` made; with none it
    refuses rather than sign with a key everyone knows."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "SHOPSTREAM_STATE_DIR": str(tmp_path),
    }

    def dev_token() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agents.cli", "dev-token", "--role", "admin"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    refused = dev_token()
    assert refused.returncode == 2
    assert "JWT_SECRET is not set" in refused.stderr
    key = jwt_secret(tmp_path)
    done = dev_token()
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    claims = tokens.decode(Settings.from_env({"JWT_SECRET": key}), token, "access")
    assert claims["role"] == "admin"
