"""deploy/: Prometheus config and rules pass promtool, alerts fire on recorded data, the
dashboard queries only real metrics in valid PromQL, and the compose and k8s files hold together.

promtool is required (``make setup`` installs it): a missing binary fails these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from streams.metrics import Metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "churnstream.json"
# Grafana's own variables, replaced by plausible values so promtool can parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$instance": ".*"}
OTHER_METRICS = {"up", "ALERTS"}
_METRIC_NAME = re.compile(r"\b(churnstream_[a-z0-9_]+)")
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
    "gauge": ("",),
}


def promtool() -> str:
    """Return the promtool path, or fail with what to do (the Makefile's setup installs it)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found on PATH: run `make setup`, which installs Debian's "
            "`prometheus` package (apt-get install -y --no-install-recommends prometheus)"
        )
    return path


def run_promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    """Run promtool; return its output, or fail the test showing it."""
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def exposed_metric_names() -> set[str]:
    """Return every sample name a worker's /metrics can expose."""
    names: set[str] = set()
    for family in Metrics.create(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def dashboard_queries() -> Iterator[tuple[str, str]]:
    """Yield (panel title, PromQL) of every dashboard target and template variable."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]["query"]
        yield variable["name"], query.removeprefix("label_values(").rsplit(",", 1)[0]


def _concrete(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def test_prometheus_config_is_valid() -> None:
    output = run_promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in output


def test_alert_rules_are_valid() -> None:
    output = run_promtool("check", "rules", "rules.yml")
    assert "SUCCESS: 9 rules found" in output


def test_alert_rules_fire_on_recorded_series() -> None:
    """rules_test.yml evaluates every alert on series that should and should not fire it."""
    output = run_promtool("test", "rules", "rules_test.yml")
    assert "SUCCESS" in output


def test_alert_rules_fail_when_the_expectation_is_wrong(tmp_path: Path) -> None:
    """The unit tests can fail: the same data with a wrong expectation is reported."""
    shutil.copy(PROMETHEUS_DIR / "rules.yml", tmp_path / "rules.yml")
    broken = (PROMETHEUS_DIR / "rules_test.yml").read_text().replace("value: 3800", "value: 3801")
    (tmp_path / "rules_test.yml").write_text(broken)
    result = subprocess.run(
        [promtool(), "test", "rules", "rules_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "3.801E+03" in result.stdout + result.stderr


def test_rules_and_dashboard_use_only_metrics_the_worker_exposes() -> None:
    known = exposed_metric_names()
    used_by_rules = set(_METRIC_NAME.findall((PROMETHEUS_DIR / "rules.yml").read_text()))
    used_by_dashboard = {
        name for _, expr in dashboard_queries() for name in _METRIC_NAME.findall(expr)
    }
    assert used_by_rules - known == set()
    assert used_by_dashboard - known == set()
    assert len(used_by_dashboard) >= 15


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule: a typo in any panel fails here."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for index, (_, expr) in enumerate(dashboard_queries()):
        lines.append(f"      - record: dashboard:query_{index}")
        lines.append(f"        expr: {json.dumps(_concrete(expr))}")
    (tmp_path / "dashboard_rules.yml").write_text("\n".join(lines) + "\n")
    run_promtool("check", "rules", "dashboard_rules.yml", cwd=tmp_path)


def test_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "churnstream"
    rows = {panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"}
    assert {"Throughput", "Latency", "Kafka and state", "Model health"} <= rows
    assert "Risk alerts and interventions" in rows
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    datasource_uids = {
        panel["datasource"]["uid"] for panel in dashboard["panels"] if "datasource" in panel
    }
    provisioned = (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    assert datasource_uids == {"churnstream-prometheus"}
    assert "uid: churnstream-prometheus" in provisioned


def _load_all(path: Path) -> list[dict[str, Any]]:
    """Return the YAML documents of ``path`` (PyYAML is a dev dependency for these checks)."""
    yaml = pytest.importorskip("yaml", reason="PyYAML (dev extra) parses compose and k8s files")
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def test_grafana_provisioning_points_at_the_dashboards() -> None:
    datasources = _load_all(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")[0]
    providers = _load_all(DEPLOY / "grafana/provisioning/dashboards/churnstream.yml")[0]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_wires_kafka_workers_prometheus_and_grafana() -> None:
    compose = _load_all(DEPLOY / "docker-compose.yml")[0]
    services = compose["services"]
    assert {"kafka", "topics", "worker-1", "worker-2", "prometheus", "grafana"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert env["CHURNSTREAM_WEB_HOST"] == name
        assert env["CHURNSTREAM_BROKER"] == "kafka:9092"
    published = [port for svc in services.values() for port in svc.get("ports", [])]
    assert published
    assert all(str(port).startswith("127.0.0.1:") for port in published)
    scrape = _load_all(PROMETHEUS_DIR / "prometheus.yml")[0]["scrape_configs"][0]
    assert scrape["static_configs"][0]["targets"] == ["worker-1:6066", "worker-2:6066"]
    grafana_mounts = services["grafana"]["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana_mounts


def test_kubernetes_manifests_run_workers_as_a_probed_statefulset() -> None:
    documents = [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in _load_all(path)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document["kind"], []).append(document)
    (statefulset,) = by_kind["StatefulSet"]
    spec = statefulset["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    (claim,) = spec["volumeClaimTemplates"]
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/churnstream"
    configmap = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == "churnstream")
    assert configmap["data"]["CHURNSTREAM_DATA_DIR"] == "/var/lib/churnstream"
    port_names = {port["name"] for port in container["ports"]}
    services = {service["metadata"]["name"]: service for service in by_kind["Service"]}
    assert {"churnstream-api", "churnstream-workers"} <= set(services)
    assert spec["serviceName"] == "churnstream-workers"
    labels = spec["template"]["metadata"]["labels"]
    for service in services.values():
        assert all(port["targetPort"] in port_names for port in service["spec"]["ports"])
        assert service["spec"]["selector"].items() <= labels.items()
    assert "Secret" not in by_kind or all(
        "example" in path.name for path in (DEPLOY / "k8s").glob("*secret*")
    )
    kustomization = _load_all(DEPLOY / "k8s/kustomization.yaml")[0]
    assert "secret.example.yaml" not in kustomization["resources"]
    listed = {path.name for path in (DEPLOY / "k8s").glob("*.yaml")}
    assert set(kustomization["resources"]) <= listed


def _docker_compose_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _docker_compose_available(),
    reason="needs the docker client with the compose plugin (`docker compose version`)",
)
def test_docker_compose_config_is_valid() -> None:
    env = {
        **os.environ,
        "CHURNSTREAM_MODEL_SECRET": "x" * 32,
        "GRAFANA_ADMIN_PASSWORD": "test-only",
    }
    result = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
