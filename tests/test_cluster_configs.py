"""The launch configurations in `cluster/`, checked offline (no cloud credentials, no cluster):
each `ray up` file through Ray's own config preparation and schema (`prepare_config` +
`validate_config`, as Ray's test_autoscaler_yaml.py does), plus hpo's checks Ray does not make
(a GCP project id, resources on every node type, complete setup commands: torch before hpo,
the MLflow server on the head, shared storage, no secrets); the KubeRay manifests against the
CRDs' openAPI schemas (jsonschema) and the built-in kinds with kubernetes-validate."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kuberay import crd_schema

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"
RAY_UP = sorted(CLUSTER.glob("*.yaml"))
MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
GCP_PLACEHOLDER = "SET-YOUR-PROJECT-ID"  # cluster/README.md tells users to set it
K8S = "1.33.0"


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own preparation and schema check of a `ray up` config (what `ray up` does before it
    talks to any cloud)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    out = prepare_config(copy.deepcopy(config))
    validate_config(out)
    return out


def _commands(config: dict[str, Any], key: str) -> list[str]:
    return [" ".join(c.split()) for c in config.get(key) or []]


def problems(config: dict[str, Any]) -> list[str]:
    """hpo's checks of a `ray up` config, beyond Ray's schema: what would fail only on a real
    `ray up` or, worse, at the first trial."""
    out = []
    provider = config.get("provider") or {}
    if provider.get("type") == "gcp" and not provider.get("project_id"):
        out.append("provider.project_id must be set (null passes Ray's schema and fails at `ray up`)")
    if provider.get("type") == "local":
        if "available_node_types" in config:
            out.append("the local provider refuses available_node_types")
        for ip in [provider.get("head_ip"), *(provider.get("worker_ips") or [])]:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                out.append(f"provider head_ip/worker_ips must be IP addresses, not {ip!r}")
    else:
        types = config.get("available_node_types") or {}
        if not types or config.get("head_node_type") not in types:
            out.append("available_node_types and head_node_type must be set (head_node/worker_nodes are legacy)")
        for name, node_type in types.items():
            if "CPU" not in (node_type.get("resources") or {}):
                out.append(f"available_node_types.{name}.resources must state CPU (and GPU where there is one)")
            node_config = str(node_type.get("node_config"))
            if ("guestAccelerators" in node_config or re.search(r"'InstanceType': '[gp]\d", node_config)) \
                    and not (node_type.get("resources") or {}).get("GPU"):
                out.append(f"available_node_types.{name}.resources must state its GPUs")
    setup = _commands(config, "setup_commands")
    torch = next((i for i, c in enumerate(setup) if "torch==2.13.0" in c), None)
    hpo = next((i for i, c in enumerate(setup) if "~/hpo" in c and "pip install" in c), None)
    if torch is None or hpo is None or torch > hpo:
        out.append("setup_commands must install torch==2.13.0, then this project (~/hpo)")
    if not any('"ray[default]==2.60.0"' in c for c in setup) or not any("--python 3.11" in c for c in setup):
        out.append("setup_commands must install Ray 2.60 (with its job server) on the same Python on every node")
    if not any("HPO_SHARED_STORAGE=1" in c for c in setup):
        out.append("the nodes must set HPO_SHARED_STORAGE=1 (storage_path on shared storage)")
    head = " ".join(_commands(config, "head_start_ray_commands"))
    if "ray start --head" not in head or "mlflow server" not in head:
        out.append("head_start_ray_commands must start Ray and the MLflow tracking server")
    return out


@pytest.mark.parametrize("path", RAY_UP, ids=lambda p: p.name)
def test_ray_up_config_passes_rays_preparation_and_schema(path: Path) -> None:
    config = prepared(load(path))
    assert config["available_node_types"][config["head_node_type"]]
    assert problems(load(path)) == []


@pytest.mark.parametrize("path", [CLUSTER / "aws.yaml", CLUSTER / "gcp.yaml"], ids=lambda p: p.name)
def test_cloud_configs_have_cpu_head_gpu_and_cpu_workers_and_the_mlflow_server(path: Path) -> None:
    config = prepared(load(path))
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0  # the head runs no trials
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert sorted(bool(t["resources"].get("GPU")) for t in workers) == [False, True]
    assert all(t["max_workers"] > t["min_workers"] >= 0 for t in workers)  # autoscaling
    assert sum(t["min_workers"] for t in workers) <= config["max_workers"]
    head_cmds = " ".join(_commands(config, "head_start_ray_commands"))
    for flag in ('--backend-store-uri "$MLFLOW_BACKEND_STORE_URI"',
                 '--artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION"', "--host 0.0.0.0", "--app-name basic-auth",
                 "--allowed-hosts", 'MLFLOW_AUTH_ADMIN_PASSWORD="$(', 'PGPASSWORD="$('):
        assert flag in head_cmds, flag
    assert "postgresql://" in (CLUSTER / "hpo-cluster.env.example").read_text()
    setup = " ".join(_commands(config, "setup_commands"))
    assert "/mnt/hpo" in setup and "mount" in setup  # the shared storage path on every node
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in setup  # CPU nodes: CPU torch


def test_gcp_project_id_is_a_documented_placeholder_and_null_is_refused() -> None:
    config = load(CLUSTER / "gcp.yaml")
    assert config["provider"]["project_id"] == GCP_PLACEHOLDER
    assert GCP_PLACEHOLDER in (CLUSTER / "README.md").read_text()
    null = copy.deepcopy(config)
    null["provider"]["project_id"] = None
    prepared(null)  # Ray's schema lets null through ...
    assert any("project_id" in p for p in problems(null))  # ... hpo's check does not


def test_hpo_checks_catch_what_rays_schema_lets_through() -> None:
    aws = load(CLUSTER / "aws.yaml")
    no_resources = copy.deepcopy(aws)
    no_resources["available_node_types"]["worker.gpu"]["resources"] = {}  # Ray's schema needs the key only
    prepared(no_resources)
    assert any("worker.gpu.resources" in p for p in problems(no_resources))
    no_gpu = copy.deepcopy(aws)
    no_gpu["available_node_types"]["worker.gpu"]["resources"] = {"CPU": 8}
    assert any("its GPUs" in p for p in problems(no_gpu))
    swapped = copy.deepcopy(aws)
    setup = swapped["setup_commands"]
    i = next(k for k, c in enumerate(setup) if "torch" in c)
    j = next(k for k, c in enumerate(setup) if "install --python ~/venv ~/hpo" in c)
    setup[i], setup[j] = setup[j], setup[i]
    assert any("torch==2.13.0, then this project" in p for p in problems(swapped))
    local = load(CLUSTER / "local.yaml")
    named = copy.deepcopy(local)
    named["provider"]["worker_ips"] = ["worker-1.example.com"]
    assert any("IP addresses" in p for p in problems(named))


def test_rays_checks_are_real() -> None:
    import jsonschema

    aws = load(CLUSTER / "aws.yaml")
    with pytest.raises(jsonschema.ValidationError):  # a misspelt key
        prepared({**aws, "setup_comands": []})
    missing = copy.deepcopy(aws)
    del missing["available_node_types"]["worker.gpu"]["resources"]
    with pytest.raises(jsonschema.ValidationError, match="resources"):
        prepared(missing)
    with pytest.raises(ValueError, match="head_node_type"):
        prepared({**aws, "head_node_type": "head.gpu"})
    local = load(CLUSTER / "local.yaml")
    with pytest.raises(BaseException, match="available_node_types"):  # the local provider's abort
        prepared({**local, "available_node_types": {"x": {"resources": {}, "node_config": {}}}})


def test_local_config_takes_the_workers_by_ip() -> None:
    config = prepared(load(CLUSTER / "local.yaml"))
    node_type = config["available_node_types"][config["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])


def test_no_secrets_in_any_cluster_file() -> None:
    literal = re.compile(r"(PASSWORD|SECRET|TOKEN|KEY)[A-Z_]*\s*[:=]\s*['\"]?(?![$'\"]|\s|hpo-)(\S+)")
    for path in [*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.example"), CLUSTER / "kuberay" / "Dockerfile"]:
        text = path.read_text()
        assert not re.search(r"postgresql://[^@/\s]*:[^@/\s]*@", text), path  # no password in a URL
        for m in literal.finditer(text):
            assert m.group(0).startswith(("HPO_DB_PASSWORD_SECRET=hpo-", "HPO_MLFLOW_ADMIN_SECRET=hpo-")), (path, m[0])


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc["spec"].get("rayClusterSpec", doc["spec"])
    return [spec["headGroupSpec"]["template"], *(g["template"] for g in spec.get("workerGroupSpecs", []))]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kuberay_built_in_kinds_and_pod_templates_validate(path: Path) -> None:
    import kubernetes_validate

    for doc in _docs(path):
        if doc["kind"] in ("RayCluster", "RayJob"):
            for template in _pod_templates(doc):  # each pod template, strictly, as the Pod it becomes
                kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"},
                                              "spec": template["spec"]}, K8S, strict=True)
        else:
            kubernetes_validate.validate(doc, K8S, strict=True)


@pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])
def test_kuberay_manifests_validate_against_the_crd_schema(kind: str) -> None:
    import jsonschema

    schema = crd_schema(kind)
    # OpenAPI v3 schemas are JSON Schema draft 4 with extensions (x-kubernetes-*, which it ignores)
    jsonschema.Draft4Validator.check_schema(schema)
    validator = jsonschema.Draft4Validator(schema)
    docs = [d for p in MANIFESTS for d in _docs(p) if d["kind"] == kind]
    assert docs
    for doc in docs:
        validator.validate(doc)
    with pytest.raises(jsonschema.ValidationError):  # the schema does check: a wrong type is caught
        validator.validate({**docs[0], "spec": {**docs[0]["spec"], "headGroupSpec" if kind == "RayCluster"
                                                else "shutdownAfterJobFinishes": "yes"}})


def test_kuberay_cluster_shape_storage_and_mlflow() -> None:
    cluster = next(d for d in _docs(CLUSTER / "kuberay" / "raycluster.yaml") if d["kind"] == "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["spec"]["rayVersion"] == "2.60.0"
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    gpu = cluster["spec"]["workerGroupSpecs"][0]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    mlflow = next(c for c in head["template"]["spec"]["containers"] if c["name"] == "mlflow")
    args = " ".join(mlflow["args"])
    assert "--host 0.0.0.0" in args and "--allowed-hosts" in args and "--app-name basic-auth" in args
    env = {e["name"]: e for e in mlflow["env"]}
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "hpo-mlflow"
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql://")
    pvc = _docs(CLUSTER / "kuberay" / "pvc.yaml")[0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    job = _docs(CLUSTER / "kuberay" / "rayjob-search.yaml")[0]
    spec = job["spec"]
    assert spec["entrypoint"].startswith("hpo run ") and "storage_path=/mnt/hpo/" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    for doc in (cluster, job):
        for template in _pod_templates(doc):
            claims = [v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]]
            assert claims == [pvc["metadata"]["name"]]
            ray_container = template["spec"]["containers"][0]
            assert {"name": "HPO_SHARED_STORAGE", "value": "1"} in ray_container["env"]
    dockerfile = (CLUSTER / "kuberay" / "Dockerfile").read_text()
    assert dockerfile.index("torch==2.13.0") < dockerfile.index("pip install --no-cache-dir /home/ray/hpo-src")
