"""Readers for deploy/: the compose file, the Kubernetes manifests, the Dockerfiles, .env.example,
and every command line they run. Plain parsing, no Docker and no cluster."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
K8S = DEPLOY / "k8s"
DOCKERFILES = {
    "cpu": DEPLOY / "docker" / "Dockerfile.cpu",
    "cuda": DEPLOY / "docker" / "Dockerfile.cuda",
}
# our images, as compose and the manifests name them (kustomize rewrites the registry)
IMAGES = {"collap-indexer:cpu": "cpu", "collap-indexer:cuda": "cuda"}

# an INDEXER_ variable as written anywhere (not `INDEXER_<FIELD>` placeholders)
INDEXER_VAR = re.compile(r"\bINDEXER_[A-Z0-9_]*[A-Z0-9]\b")
# an .env line that sets or (commented out) documents a variable
ENV_LINE = re.compile(r"^\s*(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")
SHELL_SEPARATORS = {"&&", "||", ";", "|", "&"}
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash"}


def setting_variables() -> dict[str, str]:
    """INDEXER_<FIELD> -> field name, for every field of the settings class."""
    from indexer.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper(): name for name in Settings.model_fields}


def required_setting_variables() -> set[str]:
    from indexer.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    return {
        f"{prefix}{name}".upper()
        for name, info in Settings.model_fields.items()
        if info.is_required()
    }


def text_files() -> list[Path]:
    """Every file under deploy/ (all of them are text)."""
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """(file, document) for every non-empty YAML document under deploy/k8s/."""
    out = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((path, doc))
    return out


def env_example() -> dict[str, tuple[str, bool]]:
    """Variable -> (value, set), where set is False for a commented-out line."""
    out: dict[str, tuple[str, bool]] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = ENV_LINE.match(line)
        if m:
            out.setdefault(m.group(2), (m.group(3), m.group(1) is None))
    return out


# ---- Dockerfiles --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV, ...
    args: str  # the rest of the logical line, continuations joined


def dockerfile(kind: str) -> list[Instruction]:
    lines, current = [], ""
    for raw in DOCKERFILES[kind].read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    out = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last stage (the image that runs)."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1] :]


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for token in shlex.split(ins.args):
                key, sep, value = token.partition("=")
                if sep:
                    env[key] = value
    return env


def exec_form(args: str) -> list[str] | None:
    """A JSON-array (exec form) argument list, or None for shell form."""
    if args.startswith("["):
        value = json.loads(args)
        assert isinstance(value, list)
        return [str(v) for v in value]
    return None


# ---- command lines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    where: str  # file and place, for messages and test ids
    argv: tuple[str, ...]


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script (split on && || ; | &), redirections dropped."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    current: list[str] = []
    target = False  # the token after a redirection operator is its target, not an argument
    for token in lexer:
        if token in SHELL_SEPARATORS:
            if current:
                yield current
            current, target = [], False
        elif set(token) <= set("<>&"):
            target = True
        elif target:
            target = False
        else:
            current.append(token)
    if current:
        yield current


def expand(argv: list[str]) -> Iterator[list[str]]:
    """argv, or the commands of its script when argv is `sh -c SCRIPT`; leading VAR=x dropped."""
    while argv and re.match(r"^[A-Z_][A-Z0-9_]*=", argv[0]):
        argv = argv[1:]
    if len(argv) >= 3 and argv[0] in SHELLS and argv[1] == "-c":
        for inner in shell_commands(argv[2]):
            yield from expand(inner)
    elif argv:
        yield argv


def _healthcheck_commands(where: str, test: Any) -> Iterator[Command]:
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return
    if test[0] == "CMD-SHELL":
        scripts = [list(shell_commands(" ".join(test[1:])))]
    else:
        scripts = [[list(test[1:])]]
    for script in scripts:
        for argv in script:
            for cmd in expand(argv):
                yield Command(where, tuple(cmd))


def dockerfile_commands() -> Iterator[Command]:
    for kind in DOCKERFILES:
        instructions = dockerfile(kind)
        name = DOCKERFILES[kind].name
        entrypoint: list[str] = []
        cmd: list[str] = []
        for ins in instructions:
            if ins.keyword == "RUN":
                for argv in shell_commands(ins.args):
                    for c in expand(argv):
                        yield Command(f"{name}: RUN", tuple(c))
            elif ins.keyword == "HEALTHCHECK":
                _, _, test = ins.args.partition("CMD ")
                form = exec_form(test.strip())
                argvs = [form] if form else list(shell_commands(test))
                for argv in argvs:
                    for c in expand(argv):
                        yield Command(f"{name}: HEALTHCHECK", tuple(c))
            elif ins.keyword == "ENTRYPOINT":
                entrypoint = exec_form(ins.args) or shlex.split(ins.args)
            elif ins.keyword == "CMD":
                cmd = exec_form(ins.args) or shlex.split(ins.args)
        yield Command(f"{name}: ENTRYPOINT + CMD", tuple(entrypoint + cmd))


def image_entrypoint(image: str) -> list[str]:
    """The ENTRYPOINT of one of our images, from its Dockerfile."""
    entry: list[str] = []
    for ins in final_stage(dockerfile(IMAGES[image])):
        if ins.keyword == "ENTRYPOINT":
            entry = exec_form(ins.args) or shlex.split(ins.args)
    return entry


def _as_argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def compose_commands() -> Iterator[Command]:
    for name, svc in compose()["services"].items():
        where = f"docker-compose.yml: {name}"
        image = svc.get("image", "")
        if image in IMAGES or svc.get("command") is not None:
            entry = _as_argv(svc.get("entrypoint"))
            if not entry and image in IMAGES:
                entry = image_entrypoint(image)
            command = _as_argv(svc.get("command"))
            if entry or command:
                yield Command(f"{where}: command", tuple(entry + command))
        if "healthcheck" in svc:
            yield from _healthcheck_commands(
                f"{where}: healthcheck", svc["healthcheck"].get("test")
            )


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a workload document (Deployment, StatefulSet, ...), else []."""
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def k8s_commands() -> Iterator[Command]:
    for path, doc in k8s_documents():
        for c in pod_containers(doc):
            where = f"{path.relative_to(K8S)}: {doc['metadata']['name']}/{c['name']}"
            image = c.get("image", "")
            entry = _as_argv(c.get("command"))
            if not entry and image in IMAGES:
                entry = image_entrypoint(image)
            argv = entry + _as_argv(c.get("args"))
            if argv:
                for cmd in expand(argv):
                    yield Command(f"{where}: command", tuple(cmd))
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                exec_ = c.get(probe, {}).get("exec")
                if exec_:
                    for cmd in expand(_as_argv(exec_["command"])):
                        yield Command(f"{where}: {probe}", tuple(cmd))


def all_commands() -> list[Command]:
    return [*dockerfile_commands(), *compose_commands(), *k8s_commands()]
