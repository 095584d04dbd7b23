"""Static checks of deploy/, the Dockerfile and constraints/, plus one real server scraped for metrics.

Docker and kubectl are not available here, so the files are checked the way those tools would read
them: Kubernetes manifests against the API's JSON schemas (kubernetes-validate bundles them, no network
needed), PromQL with a real parser (promql-parser), and every metric the alerts and the dashboard use
against what a running server actually exports.
"""

from __future__ import annotations

import json
import re
import socket
import tomllib
import urllib.request
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import yaml

from conftest import ROOT, ServerProcess

from curvecast.server import metrics as server_metrics
from curvecast.server.config import Settings, env_name

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OLDEST_K8S = "1.30"  # validated against this and the newest schema kubernetes-validate bundles
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SETTINGS_ENV = {env_name(f.name) for f in fields(Settings)}
# Labels Prometheus adds to every series (scrape target, Kubernetes service discovery).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}


def yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> Iterator[tuple[Path, dict]]:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml_docs(path):
            yield path, doc


def by_kind(kind: str, folder: Path = K8S) -> list[dict]:
    return [doc for path, doc in k8s_objects() if doc["kind"] == kind and folder in path.parents]


def deployments() -> dict[str, dict]:
    return {variant: by_kind("Deployment", K8S / variant)[0] for variant in ("cpu", "gpu")}


def container(deployment: dict) -> dict:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", [])}


def cpu_cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


# --- every file parses ---------------------------------------------------------------------------------


def test_every_yaml_and_json_in_deploy_parses():
    yamls = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
    jsons = sorted(DEPLOY.rglob("*.json"))
    assert len(yamls) >= 12 and jsons, "deploy/ lost files"
    for path in yamls:
        assert yaml_docs(path), f"{path} is empty"
    for path in jsons:
        json.loads(path.read_text())


# --- Kubernetes ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kubernetes_validate():
    return pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (offline schemas)")


@pytest.fixture(scope="module")
def promql():
    return pytest.importorskip("promql_parser", reason="pip install promql-parser")


@pytest.fixture()
def no_network(monkeypatch):
    """Schema validation must work offline: any connection attempt fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access during validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_k8s_manifests_validate_against_schemas(no_network, kubernetes_validate):
    kinds = set()
    for path, doc in k8s_objects():
        kinds.add(doc["kind"])
        if doc["kind"] in CRD_KINDS:
            continue
        for version in (OLDEST_K8S, kubernetes_validate.utils.latest_version()):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.relative_to(ROOT)} ({doc['kind']}) invalid for Kubernetes {version}: "
                            f"{'.'.join(map(str, exc.path))}: {exc.message}")
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceAccount",
            "ServiceMonitor", "PrometheusRule"} <= kinds


def test_schema_validation_catches_mistakes(no_network, kubernetes_validate):
    """The validator is strict: a misspelt field or a wrong type is an error (so the test above can fail)."""
    bad = deployments()["cpu"]
    bad = json.loads(json.dumps(bad))
    container(bad)["readinessProbe"]["grpc"]["prot"] = 50051
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.utils.latest_version(), strict=True)
    bad = json.loads(json.dumps(deployments()["cpu"]))
    container(bad)["resources"]["limits"]["cpu"] = ["2"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, kubernetes_validate.utils.latest_version(), strict=True)


def test_kustomizations_reference_existing_files_and_nothing_is_orphaned():
    referenced: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kfile.read_text())["resources"]:
            target = (kfile.parent / entry).resolve()
            assert target.exists(), f"{kfile.relative_to(ROOT)} references missing {entry}"
            if target.is_dir():
                assert (target / "kustomization.yaml").exists()
            referenced.add(target)
    manifests = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests <= referenced, f"not in any kustomization: {sorted(map(str, manifests - referenced))}"


def test_service_monitor_pdb_and_hpa_point_at_the_deployment():
    (service,) = by_kind("Service")
    (monitor,) = by_kind("ServiceMonitor")
    (pdb,) = by_kind("PodDisruptionBudget")
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert service["spec"]["clusterIP"] == "None", "client-side load balancing needs a headless Service"
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {"grpc", "metrics"} <= set(service_ports)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= set(service_ports)
    assert monitor["metadata"]["name"] == service["metadata"]["name"] == "curvecast"  # job="curvecast" in alerts
    for variant, dep in deployments().items():
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert service["spec"]["selector"].items() <= pod_labels.items(), variant
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), variant
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": dep["metadata"]["name"]}
        ports = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
        for sp in service_ports.values():
            assert sp["targetPort"] in ports, f"{variant}: Service targets unknown port {sp['targetPort']}"
        assert ports == {"grpc": 50051, "metrics": 9464}
    assert hpa["spec"]["minReplicas"] >= 2 and pdb["spec"]["maxUnavailable"] == 1


def test_probes_are_native_grpc_on_health_names_the_server_registers():
    from curvecast.server.app import ANALYTIC_HEALTH, LEARNED_HEALTH, SERVICE_NAME

    known = {"", SERVICE_NAME, LEARNED_HEALTH, ANALYTIC_HEALTH}
    for variant, dep in deployments().items():
        c = container(dep)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            action = c[probe]["grpc"]
            assert action["port"] == grpc_port, f"{variant} {probe}"
            assert action.get("service", "") in known, f"{variant} {probe}: unknown health service"
        assert c["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_pods_run_unprivileged_with_a_read_only_root():
    for variant, dep in deployments().items():
        pod = dep["spec"]["template"]["spec"]
        c = container(dep)
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts, f"{variant}: a read-only root needs a writable /tmp"
        grace = pod["terminationGracePeriodSeconds"]
        drain = float(env_of(c)["CURVECAST_GRACE_S"]) + c["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert grace > drain, f"{variant}: pods are killed before in-flight calls drain"


def test_resources_match_the_thread_settings():
    for variant, dep in deployments().items():
        c = container(dep)
        env = env_of(c)
        unknown = {k for k in env if k.startswith("CURVECAST_")} - SETTINGS_ENV
        assert not unknown, f"{variant}: environment variables the server does not read: {unknown}"
        req, lim = c["resources"]["requests"], c["resources"]["limits"]
        for quantity in (*req.values(), *lim.values()):  # the schema accepts any string here
            assert re.fullmatch(r"\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity)), f"{variant}: {quantity!r}"
        assert req == lim, f"{variant}: requests != limits (not Guaranteed QoS; HPA utilisation skewed)"
        cores = cpu_cores(lim["cpu"])
        threads = int(env["CURVECAST_ENGINE_THREADS"]) * int(env["CURVECAST_ORT_THREADS"])
        workers = int(env["CURVECAST_ANALYTIC_WORKERS"])
        assert threads >= 1 and threads + workers <= cores, f"{variant}: {threads}+{workers} threads on {cores} cores"
        assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "1"
    gpu = container(deployments()["gpu"])
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert env_of(gpu)["CURVECAST_DEVICE"] == "cuda" and gpu["image"].endswith(":gpu")
    cpu = container(deployments()["cpu"])
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"] and env_of(cpu)["CURVECAST_DEVICE"] == "cpu"


def test_prometheus_rule_matches_alerts_file():
    (rule,) = by_kind("PrometheusRule")
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], (
        "k8s/base/prometheusrule.yaml drifted from prometheus/alerts.yml: copy alerts.yml's groups into spec.groups")


# --- PromQL: alerts and dashboard against a real server's /metrics -------------------------------------


def alert_rules() -> list[dict]:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [r for g in alerts["groups"] for r in g["rules"]]


GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*", "$instance": ".*"}


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "curvecast.json").read_text())


def dashboard_queries() -> list[str]:
    out = []
    for panel in dashboard()["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q.strip())
            assert m, f"unexpected variable query {q!r}"
            out.append(m.group(1))
    return out


def promql_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every vector selector in ``expr``."""
    promql = pytest.importorskip("promql_parser", reason="pip install promql-parser")
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    tree = promql.parse(expr)
    found: list[tuple[str, set[str]]] = []

    def visit(node):
        if isinstance(node, promql.VectorSelector):
            labels = {m.name for m in node.matchers.matchers}
            name = node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__")
            found.append((name, labels - {"__name__"}))

    promql.walk(tree, visit)
    return found


def test_promql_selector_extraction(promql):
    got = promql_selectors('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="1"}[$__rate_interval])))'
                           ' / ignoring(x) sum(b) or absent(up{job=~"$job"})')
    assert got == [("a_bucket", {"x"}), ("b", set()), ("up", {"job"})]
    with pytest.raises(ValueError):
        promql_selectors("sum(rate(a[5m])")


def exported_names(text: str) -> set[str]:
    """Every series name a scrape can contain, including families that have no samples yet."""
    from prometheus_client.parser import text_string_to_metric_families

    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                    "summary": ("_sum", "_count", ""), "gauge": ("",), "info": ("_info",)}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def server_label_names() -> dict[str, set[str]]:
    """Label names of every server metric, by exported series name."""
    out: dict[str, set[str]] = {}
    for obj in vars(server_metrics).values():
        if hasattr(obj, "_labelnames") and hasattr(obj, "_name"):
            kind = getattr(obj, "_type", "")
            base = obj._name
            series = {"counter": [base + "_total"], "histogram": [base + "_bucket", base + "_sum", base + "_count"]}
            for name in series.get(kind, [base]):
                out[name] = set(obj._labelnames) | ({"le"} if name.endswith("_bucket") else set())
    return out


@pytest.fixture(scope="module")
def scraped_metrics() -> set[str]:
    from curvecast_client import Client, CurvecastError

    proc = ServerProcess().wait_ready()
    try:
        x = np.linspace(10, 300, 30)
        with Client(proc.address, timeout=20, retries=0) as c:
            c.forecast(x, 2.0 + 4.0 * x**-0.4, total_steps=1000, target=2.2, incumbent=2.1)
            c.forecast_batch([{"x": x, "y": 1.0 + x**-0.3, "total_steps": 500}])
            c.model_info()
            with pytest.raises(CurvecastError):
                c.forecast([1.0], [float("nan")])
        text = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10).read().decode()
    finally:
        proc.stop()
    return exported_names(text)


def check_queries(queries: list[str], exported: set[str], where: str) -> set[str]:
    labels = server_label_names()
    used = set()
    for expr in queries:
        for name, matched in promql_selectors(expr):
            used.add(name)
            if name == "up":  # synthesised by Prometheus per target
                assert matched <= TARGET_LABELS, f"{where}: {expr}"
                continue
            assert name in exported, f"{where}: {name} is not exported by the server (query: {expr})"
            known = labels.get(name, set()) | TARGET_LABELS
            assert matched <= known, f"{where}: {name} has no label(s) {matched - known} (query: {expr})"
    return used


def test_alert_rules_are_well_formed_and_use_exported_metrics(scraped_metrics, promql):
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            promql.parse_duration(rule["for"])
    used = check_queries([r["expr"] for r in rules], scraped_metrics, "alerts.yml")
    # The issue's four families of alert: error rate, latency, saturation, model not loaded (+ target down).
    assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket", "curvecast_inflight_curves",
            "curvecast_queue_depth", "curvecast_engine_available", "up"} <= used


def test_dashboard_uses_exported_metrics_and_shows_them_all(scraped_metrics):
    used = check_queries(dashboard_queries(), scraped_metrics, "curvecast.json")
    families = {name for name in server_label_names() if not name.endswith(("_sum", "_count"))}
    shown = {u.removesuffix("_sum").removesuffix("_count") for u in used}
    missing = {f for f in families
               if f not in used and f.removesuffix("_bucket") not in shown and f.removesuffix("_total") not in shown}
    assert not missing, f"server metrics missing from the dashboard: {sorted(missing)}"


def test_dashboard_layout():
    dash = dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and dash["uid"] and dash["title"]
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] != "row":
            assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]


# --- docker compose, Prometheus and Grafana wiring ----------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_references_files_that_exist():
    services = compose()["services"]
    build = services["curvecast"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == ROOT and (context / build["dockerfile"]).exists()
    assert build["target"] in dockerfile_stages()
    mounts: dict[str, str] = {}
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
                mounts[target] = source
            else:
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"
    # Prometheus gets its config and the rules file it loads; Grafana its provisioning and dashboards.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in prom["rule_files"]:
        assert rule_file in mounts and (DEPLOY / mounts[rule_file]).resolve() == DEPLOY / "prometheus" / "alerts.yml"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/curvecast.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / mounts[path] / "curvecast.json").exists()
    assert "/etc/grafana/provisioning/dashboards" in mounts and "/etc/grafana/provisioning/datasources" in mounts


def test_compose_prometheus_and_grafana_are_wired_to_each_other():
    services = compose()["services"]
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "curvecast"]
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host in services and int(port) == 9464 == int(dockerfile_env("cpu")["CURVECAST_METRICS_PORT"])
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    assert ds["type"] == "prometheus" and re.fullmatch(r"http://prometheus:9090/?", ds["url"])
    assert "prometheus" in services and services["curvecast"]["read_only"] is True
    assert int(services["curvecast"]["user"].split(":")[0]) != 0
    for svc in services.values():
        for port_spec in svc.get("ports", []):
            assert str(port_spec).startswith("127.0.0.1:"), f"{port_spec} is published beyond loopback"


# --- Dockerfile, .dockerignore, constraints/ ----------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest, re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            current = m.group(2)
            stages[current] = [("FROM", m.group(1))]
        elif current is not None:
            stages[current].append((word, rest))
    return stages


def dockerfile_env(stage: str) -> dict[str, str]:
    env = {}
    for word, rest in dockerfile_stages()[stage]:
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def dockerfile_global_args() -> dict[str, str]:
    args = {}
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    return args


def test_dockerfile_runtime_stages():
    stages = dockerfile_stages()
    assert list(stages)[-1] == "cpu", "the default (last) target must be the CPU image"
    args = dockerfile_global_args()
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert args["CUDA_IMAGE"].startswith("nvidia/cuda:") and "cudnn" in args["CUDA_IMAGE"]
    assert stages["gpu"][0] == ("FROM", "${CUDA_IMAGE}") and stages["cpu"][0] == ("FROM", "${PYTHON_IMAGE}")
    for name in ("cpu", "gpu"):
        words = dict(stages[name])
        users = [rest for word, rest in stages[name] if word == "USER"]
        assert users and users[-1].split(":")[0] not in {"0", "root"}, f"{name} runs as root"
        assert users[-1].split(":")[0].isdigit(), "numeric USER, so Kubernetes can verify runAsNonRoot"
        assert set(words["EXPOSE"].split()) == {"50051", "9464"}
        assert "curvecast-server" in words["ENTRYPOINT"] and "HEALTHCHECK" in words
        env = dockerfile_env(name)
        assert {k for k in env if k.startswith("CURVECAST_")} <= SETTINGS_ENV
        assert env["PYTHONDONTWRITEBYTECODE"] == "1", "no .pyc writes on a read-only root"
        # Runtime stages carry no compilers or pip caches: they copy a finished venv.
        assert any(w == "COPY" and "--from=" in r and "/opt/venv" in r for w, r in stages[name])
    assert dockerfile_env("gpu")["CURVECAST_DEVICE"] == "cuda" and dockerfile_env("cpu")["CURVECAST_DEVICE"] == "cpu"


def constraints(*names: str) -> dict[str, str]:
    """Exact pins of constraints/<name>.txt (serve and gpu by default: what the images install)."""
    from packaging.utils import canonicalize_name

    pins = {}
    for name in names or ("serve", "gpu"):
        for line in (ROOT / "constraints" / f"{name}.txt").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9_.+\-]*)", line)
                assert m, f"constraints/{name}.txt: not an exact pin: {line!r}"
                pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def test_constraints_pin_every_runtime_dependency_as_tested():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in project:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"constraints/serve.txt does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {dep}"
        # ...and the dependencies of every installed runtime package.
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        assert dist.version == pins[name], f"{name}: installed {dist.version}, pinned {pins[name]}"
        for sub in dist.requires or []:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                assert canonicalize_name(r.name) in pins, f"{name} needs {r.name}, which is not pinned"
    args = dockerfile_global_args()
    for arg, package in (("ORT_CPU", "onnxruntime"), ("ORT_GPU", "onnxruntime-gpu")):
        assert args[arg] == f"{package}=={pins[package]}", f"Dockerfile {arg} and constraints/ disagree"


def test_dockerignore_lets_the_build_context_through():
    rules = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert rules[0] == "*", "allow-list style: nothing enters the context unless named"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from=" not in rest:
            *sources, _ = rest.split()
            for source in sources:
                assert source.rstrip("/").split("/")[0] in allowed, f"COPY {source} is excluded by .dockerignore"
                if source != "README.md":  # the lead's README; everything else must exist now
                    assert (ROOT / source).exists(), f"COPY {source}: no such file"
    assert ".venv" not in allowed and ".git" not in allowed


def test_metric_check_catches_unknown_names_and_labels(scraped_metrics):
    with pytest.raises(AssertionError, match="not exported"):
        check_queries(["rate(curvecast_no_such_metric_total[5m])"], scraped_metrics, "probe")
    with pytest.raises(AssertionError, match="no label"):
        check_queries(['curvecast_queue_depth{engine="learned"}'], scraped_metrics, "probe")
    with pytest.raises(AssertionError, match="not exported"):  # a histogram is not a counter
        check_queries(["rate(grpc_server_handling_seconds_total[5m])"], scraped_metrics, "probe")
