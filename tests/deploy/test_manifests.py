"""The compose file and the Kubernetes manifests parse and hang together: services, probes,
GPU placement, autoscaling targets, and references to ConfigMaps and Secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy import deployfiles as d

WORKLOADS = {"Deployment", "StatefulSet"}


# ---- docker compose ------------------------------------------------------------------------------


def test_compose_parses_with_the_expected_services() -> None:
    services = d.compose()["services"]
    expected = {"redis", "qdrant", "api", "scan-worker", "embed-worker", "embed-worker-cpu",
                "store-worker", "beat", "flower"}  # fmt: skip
    assert expected <= set(services)


def test_compose_backends() -> None:
    services = d.compose()["services"]
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    qdrant = services["qdrant"]
    assert qdrant["image"].startswith("qdrant/qdrant:")
    assert "QDRANT__SERVICE__API_KEY" in qdrant["environment"]
    assert any(v.endswith(":/qdrant/storage") for v in qdrant["volumes"])
    assert services["flower"]["image"].startswith("mher/flower")


def test_compose_api_command() -> None:
    assert d.compose()["services"]["api"]["command"] == [
        "serve", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip


def test_compose_embed_workers_gpu_and_cpu_fallback() -> None:
    services = d.compose()["services"]
    gpu, cpu = services["embed-worker"], services["embed-worker-cpu"]
    assert gpu["image"] == "collap-indexer:cuda"
    assert gpu["build"]["dockerfile"] == "deploy/docker/Dockerfile.cuda"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(dev["driver"] == "nvidia" and "gpu" in dev["capabilities"] for dev in devices)
    assert cpu["profiles"] == ["cpu"]
    assert cpu["image"] == "collap-indexer:cpu"
    assert cpu["command"] == gpu["command"]
    assert "--queues" in gpu["command"] and "embed" in gpu["command"]


def test_compose_builds_from_existing_dockerfiles() -> None:
    for name, svc in d.compose()["services"].items():
        if "build" in svc:
            context = (d.COMPOSE.parent / svc["build"]["context"]).resolve()
            assert (context / svc["build"]["dockerfile"]).is_file(), name


def test_compose_health_checks_and_dependencies() -> None:
    services = d.compose()["services"]
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        depends = svc.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for dep, rule in depends.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert rule["condition"] == "service_healthy", f"{name} -> {dep}"


# ---- Kubernetes ----------------------------------------------------------------------------------


def _docs(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in d.k8s_documents() if doc["kind"] == kind}


def test_every_manifest_parses_as_kubernetes_objects() -> None:
    docs = d.k8s_documents()
    assert docs
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), path


def test_kustomization_lists_every_manifest_but_the_optional_ones() -> None:
    kustomization = yaml.safe_load((d.K8S / "kustomization.yaml").read_text())
    listed = {(d.K8S / r).resolve() for r in kustomization["resources"]}
    assert all(p.is_file() for p in listed)
    expected = {
        p.resolve()
        for p in d.k8s_files()
        if p.name != "kustomization.yaml" and "optional" not in p.relative_to(d.K8S).parts
    }
    assert listed == expected
    assert kustomization["namespace"] == _docs("Namespace").popitem()[0]


def test_expected_workloads() -> None:
    deployments, statefulsets = _docs("Deployment"), _docs("StatefulSet")
    assert {"api", "scan-worker", "embed-worker", "store-worker", "beat"} <= set(deployments)
    assert {"qdrant", "redis"} <= set(statefulsets)
    services = _docs("Service")
    for name, sts in statefulsets.items():
        governing = services[sts["spec"]["serviceName"]]
        assert governing["spec"].get("clusterIP") == "None", f"{name}: headless service"


@pytest.mark.parametrize(
    "path, doc",
    [(p, doc) for p, doc in d.k8s_documents() if doc["kind"] in WORKLOADS],
    ids=lambda v: v.name if isinstance(v, Path) else v["metadata"]["name"],
)
def test_workloads_run_as_non_root(path: Path, doc: dict[str, Any]) -> None:
    assert d.pod_spec(doc)["securityContext"]["runAsNonRoot"] is True
    for c in d.pod_containers(doc):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
        assert c.get("resources", {}).get("requests"), f"{c['name']}: requests (HPA, scheduling)"
    labels = doc["spec"]["template"]["metadata"]["labels"]
    selector = doc["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()


def test_api_probes_and_disruption_budget() -> None:
    api = _docs("Deployment")["api"]
    (container,) = d.pod_containers(api)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pdbs = [p for p in _docs("PodDisruptionBudget").values()]
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs)


def test_embed_worker_lands_on_a_gpu() -> None:
    embed = _docs("Deployment")["embed-worker"]
    spec = d.pod_spec(embed)
    assert spec["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    (container,) = d.pod_containers(embed)
    assert container["image"] == "collap-indexer:cuda"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INDEXER_DEVICE"] == "cuda"


def test_beat_is_a_singleton() -> None:
    beat = _docs("Deployment")["beat"]
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    assert not any(
        h["spec"]["scaleTargetRef"]["name"] == "beat"
        for h in _docs("HorizontalPodAutoscaler").values()
    )


def test_store_worker_is_one_pod_with_a_persistent_failure_log() -> None:
    """The store stage records failures in SQLite in INDEXER_DATA_DIR: one pod, one volume."""
    store = _docs("Deployment")["store-worker"]
    assert store["spec"]["replicas"] == 1
    assert store["spec"]["strategy"]["type"] == "Recreate"
    (container,) = d.pod_containers(store)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    (volume,) = [v for v in d.pod_spec(store)["volumes"] if v["name"] == mount["name"]]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert _docs("PersistentVolumeClaim")[claim]["spec"]["accessModes"] == ["ReadWriteOnce"]
    hpa_targets = {
        h["spec"]["scaleTargetRef"]["name"] for h in _docs("HorizontalPodAutoscaler").values()
    }
    assert "store-worker" not in hpa_targets


def test_autoscalers_target_existing_workers() -> None:
    deployments = _docs("Deployment")
    hpas = _docs("HorizontalPodAutoscaler")
    assert hpas
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments, name
    (scaled,) = _docs("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "embed-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "embed"
    # KEDA and an HPA must not both own the embed workers
    assert "embed-worker" not in {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()}


def test_services_select_pods() -> None:
    pod_labels = [
        doc["spec"]["template"]["metadata"]["labels"]
        for _, doc in d.k8s_documents()
        if doc["kind"] in WORKLOADS
    ]
    for name, svc in _docs("Service").items():
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


def test_config_and_secret_references_exist() -> None:
    maps = {n: set(doc.get("data", {})) for n, doc in _docs("ConfigMap").items()}
    secrets = {n: set(doc.get("stringData", {})) | set(doc.get("data", {}))
               for n, doc in _docs("Secret").items()}  # fmt: skip
    for path, doc in d.k8s_documents():
        for c in d.pod_containers(doc):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, path
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, path
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), (path, e["name"])
        if doc["kind"] == "TriggerAuthentication":
            for ref in doc["spec"]["secretTargetRef"]:
                assert ref["key"] in secrets.get(ref["name"], set()), path
