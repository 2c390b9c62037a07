"""contrib/k8s/kscand-daemonset.yaml and contrib/grafana/kscand.json, checked offline: the
manifest's fields and privileges against the systemd unit, the dashboard's every metric
against what kscand.daemon.prometheus exports (derived by running its collector)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_fakes import DaemonThread, FakeMachine, fast_config

from kscand.config import config_from_text, parse_metrics_address
from kscand.core import counters
from kscand.daemon.metrics import DurationHistogram
from kscand.daemon.prometheus import KscandCollector
from kscand.data import SYSTEMD_UNIT

ROOT = Path(__file__).resolve().parents[1]
DAEMONSET = ROOT / "contrib" / "k8s" / "kscand-daemonset.yaml"
DASHBOARD = ROOT / "contrib" / "grafana" / "kscand.json"


def unit_capabilities() -> set[str]:
    for line in SYSTEMD_UNIT.read_text().splitlines():
        if line.startswith("CapabilityBoundingSet="):
            return set(line.partition("=")[2].split())
    raise AssertionError("the unit has no CapabilityBoundingSet")


def manifests() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d is not None]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"]["name"]
    kinds = [d["kind"] for d in docs]
    assert len(set(kinds)) == len(kinds), kinds
    return {d["kind"]: d for d in docs}


def kscand_container() -> dict[str, Any]:
    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    (container,) = [c for c in containers if c["name"] == "kscand"]
    return container


# -- the DaemonSet -----------------------------------------------------------------------

def test_daemonset_has_the_required_fields() -> None:
    ds = manifests()["DaemonSet"]
    assert ds["apiVersion"] == "apps/v1"
    assert ds["metadata"]["namespace"] == manifests()["Namespace"]["metadata"]["name"]
    spec = ds["spec"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()  # else apps/v1 refuses
    container = kscand_container()
    assert container["image"] and container["args"][0] == "run"


def test_daemonset_keeps_exactly_the_units_capabilities() -> None:
    security = kscand_container()["securityContext"]
    caps = security["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert {f"CAP_{c}" for c in caps["add"]} == unit_capabilities()
    assert len(caps["add"]) == len(set(caps["add"]))
    assert security["privileged"] is False
    assert security["allowPrivilegeEscalation"] is False  # the unit's NoNewPrivileges=yes
    assert security["runAsUser"] == 0


def test_daemonset_sees_the_hosts_processes_proc_and_sys() -> None:
    pod = manifests()["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in kscand_container()["volumeMounts"]}
    args = kscand_container()["args"]
    for root, host_path, writable in (("--procfs", "/proc", False), ("--sysfs", "/sys", True)):
        mount_path = args[args.index(root) + 1]
        mount = mounts[mount_path]
        assert volumes[mount["name"]]["hostPath"]["path"] == host_path
        assert mount.get("readOnly", False) is not writable  # page_idle, DAMON: written
    state_dir = config_of_configmap().daemon.state_dir
    assert "emptyDir" in volumes[mounts[str(state_dir)]["name"]]


def config_of_configmap() -> Any:
    text = manifests()["ConfigMap"]["data"]["kscand.toml"]
    return config_from_text(text)


def test_daemonset_config_parses_and_metrics_stay_on_localhost() -> None:
    container = kscand_container()
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(config_path.parent) in mounts
    config = config_of_configmap()
    metrics = parse_metrics_address(args[args.index("--metrics") + 1], "--metrics")
    assert metrics.host == "127.0.0.1" and config.daemon.metrics == metrics
    assert manifests()["DaemonSet"]["spec"]["template"]["spec"]["hostNetwork"] is True
    for port in container.get("ports", []):  # none published beyond the node's loopback
        assert port.get("hostIP") == "127.0.0.1", port
    assert shlex.join(args).count("--metrics") == 1


# -- the Grafana dashboard -------------------------------------------------------------

def engine_counter_names() -> set[str]:
    """Every counter the engine's enums name, and one counter of each labelled family
    (so each family the exporter can emit is emitted)."""
    names: set[str] = {member for kind in vars(counters).values()
                       if isinstance(kind, type) and issubclass(kind, counters.CounterName)
                       for member in kind}
    names |= {family.key(**dict.fromkeys(family.label_names, "0"))
              for family in counters.EngineFamily}
    return names


def exported_metric_labels(status: dict[str, Any]) -> dict[str, set[str]]:
    """The sample names KscandCollector produces for a status snapshot, and their labels."""
    status = {**status, "totals": {**{n: 1 for n in engine_counter_names()},
                                   **status["totals"]}}
    collector = KscandCollector(lambda: status, DurationHistogram((0.1,)),
                                DurationHistogram((0.1,)))
    out: dict[str, set[str]] = {}
    for family in collector.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """What a running daemon's endpoint exports (its real status snapshot)."""
    config = fast_config(tmp_path_factory.mktemp("fleet") / "s")
    run = DaemonThread(config, FakeMachine(nr_procs=2, nr_pages=16))
    try:
        run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 32)
        status = run.daemon.status()
    finally:
        run.stop()
    return exported_metric_labels(status)


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        assert panel["title"] and panel["datasource"]["type"] == "prometheus"
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and target["expr"]
            exprs.append(target["expr"])
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


METRIC_NAME = re.compile(r"\b((?:nr_)?kscand_[a-zA-Z0-9_]+)\b")


def test_dashboard_parses_and_queries_only_exported_metrics(
    exported: dict[str, set[str]],
) -> None:
    queried = {m for expr in dashboard_exprs() for m in METRIC_NAME.findall(expr)}
    assert len(queried) >= 15
    assert sorted(queried - exported.keys()) == []
    # The derivation is not vacuous: what a misspelt or removed metric would look like.
    assert "nr_kscand_migrated_total" in exported
    assert "nr_kscand_migrated" not in exported  # counters are exported with _total
    assert "kscand_move_failed_pages_total" in exported
    assert "kscand_scan_step_duration_seconds_bucket" in exported


def test_dashboard_groups_only_by_labels_its_metrics_carry(
    exported: dict[str, set[str]],
) -> None:
    for expr in dashboard_exprs():
        carried = {"instance", "job"}  # added by Prometheus at scrape time
        for name in METRIC_NAME.findall(expr):
            carried |= exported.get(name, set())
        for group in re.findall(r"by \(([^)]*)\)", expr):
            assert {g.strip() for g in group.split(",")} <= carried, expr
