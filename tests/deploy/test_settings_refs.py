"""deploy/ names only settings that exist, lists all of them, and provides the required ones."""

from __future__ import annotations

import re
from typing import Any

from tests.deploy import deployfiles as d


def _environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_every_indexer_variable_in_deploy_is_a_setting() -> None:
    known = d.setting_variables()
    unknown = {
        f"{path.relative_to(d.ROOT)}: {name}"
        for path in d.text_files()
        for name in d.INDEXER_VAR.findall(path.read_text())
        if name not in known
    }
    assert not unknown, f"not fields of indexer.settings.Settings: {sorted(unknown)}"


def test_env_example_lists_every_setting_once() -> None:
    listed = [
        m.group(2)
        for line in d.ENV_EXAMPLE.read_text().splitlines()
        if (m := d.ENV_LINE.match(line)) and m.group(2).startswith("INDEXER_")
    ]
    known = set(d.setting_variables())
    assert sorted(known - set(listed)) == [], "settings missing from deploy/.env.example"
    assert sorted(set(listed) - known) == [], "deploy/.env.example names unknown settings"
    assert len(listed) == len(set(listed)), "a setting is listed twice"


def test_env_example_ships_no_secrets() -> None:
    env = d.env_example()
    for name in ("INDEXER_API_KEY", "REDIS_PASSWORD", "QDRANT_API_KEY", "FLOWER_BASIC_AUTH"):
        assert env[name] == ("", True), f"{name} must be an empty line the user fills in"


def test_k8s_example_secret_values_are_marked() -> None:
    secrets = [doc for _, doc in d.k8s_documents() if doc["kind"] == "Secret"]
    assert secrets
    for doc in secrets:
        for key, value in (doc.get("stringData") or {}).items():
            assert str(value).startswith("EXAMPLE"), f"{key}: example values start with EXAMPLE"


def _compose_provided(svc: dict[str, Any]) -> set[str]:
    provided = set(d.dockerfile_env(d.final_stage(d.dockerfile(d.IMAGES[svc["image"]]))))
    provided |= set(_environment(svc))
    if svc.get("env_file"):
        provided |= {name for name, (_, is_set) in d.env_example().items() if is_set}
    return provided


def _compose_indexer_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in d.compose()["services"].items() if s.get("image") in d.IMAGES}


def _k8s_indexer_containers() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, workload document, container) for every container running one of our images."""
    return [
        (f"{path.name}: {doc['metadata']['name']}/{c['name']}", doc, c)
        for path, doc in d.k8s_documents()
        for c in d.pod_containers(doc)
        if c.get("image") in d.IMAGES
    ]


def _k8s_data_keys(kind: str) -> dict[str, set[str]]:
    return {
        doc["metadata"]["name"]: set(doc.get("data") or {}) | set(doc.get("stringData") or {})
        for _, doc in d.k8s_documents()
        if doc["kind"] == kind
    }


def _k8s_provided(container: dict[str, Any]) -> set[str]:
    provided = set(d.dockerfile_env(d.final_stage(d.dockerfile(d.IMAGES[container["image"]]))))
    provided |= {e["name"] for e in container.get("env", [])}
    maps, secrets = _k8s_data_keys("ConfigMap"), _k8s_data_keys("Secret")
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            provided |= maps[source["configMapRef"]["name"]]
        if "secretRef" in source:
            provided |= secrets[source["secretRef"]["name"]]
    return provided


def test_compose_provides_every_required_setting() -> None:
    services = _compose_indexer_services()
    assert services, "no service runs the collap-indexer images"
    required = d.required_setting_variables()
    for name, svc in services.items():
        missing = required - _compose_provided(svc)
        assert not missing, f"docker-compose.yml: {name} lacks required settings {sorted(missing)}"


def test_k8s_provides_every_required_setting() -> None:
    containers = _k8s_indexer_containers()
    assert containers, "no manifest runs the collap-indexer images"
    required = d.required_setting_variables()
    for where, _, container in containers:
        missing = required - _k8s_provided(container)
        assert not missing, f"{where} lacks required settings {sorted(missing)}"


def _serves_beyond_loopback(argv: list[str]) -> bool:
    if "serve" not in argv:
        return False
    host = argv[argv.index("--host") + 1] if "--host" in argv else "127.0.0.1"
    return host not in {"127.0.0.1", "localhost", "::1"}


def test_compose_api_requires_its_key() -> None:
    servers = [
        (n, s) for n, s in _compose_indexer_services().items()
        if _serves_beyond_loopback(list(s.get("command") or []))
    ]  # fmt: skip
    assert servers, "no compose service runs `indexer serve` on a public address"
    for name, svc in servers:
        value = _environment(svc).get("INDEXER_API_KEY", "")
        assert re.fullmatch(r"\$\{INDEXER_API_KEY:\?[^}]*\}", value), (
            f"{name}: INDEXER_API_KEY must be required (${{INDEXER_API_KEY:?...}})"
        )


def test_k8s_api_key_comes_from_a_secret() -> None:
    secrets = _k8s_data_keys("Secret")
    servers = [
        (where, c) for where, _, c in _k8s_indexer_containers()
        if _serves_beyond_loopback([*c.get("command", []), *c.get("args", [])])
    ]  # fmt: skip
    assert servers, "no manifest runs `indexer serve` on a public address"
    for where, container in servers:
        entries = [e for e in container.get("env", []) if e["name"] == "INDEXER_API_KEY"]
        assert len(entries) == 1, f"{where}: INDEXER_API_KEY is not set"
        ref = entries[0].get("valueFrom", {}).get("secretKeyRef")
        assert ref, f"{where}: INDEXER_API_KEY must come from a Secret"
        assert ref["key"] in secrets.get(ref["name"], set()), f"{where}: {ref} does not exist"
