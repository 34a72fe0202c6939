"""Where backbones live: local directories only (no hub downloads at run time)."""

from __future__ import annotations

import importlib
from pathlib import Path

from collap_model.config import ConfigError


def resolve_local_dir(spec: str, what: str) -> Path:
    """A backbone given as a local directory or as "package:<module>" (its bundled model/)."""
    if spec.startswith("package:"):
        module = spec.removeprefix("package:")
        try:
            mod = importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(
                f"{what}: Python package {module!r} is not installed ({err})"
            ) from err
        path = (
            Path(mod.get_model_path())
            if hasattr(mod, "get_model_path")
            else Path(mod.__file__ or "").parent / "model"
        )
    else:
        path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{what}: no transformers model at {path} (config.json missing). Weights are loaded "
            "from local directories only; copy the model there first."
        )
    return path


def quiet_transformers() -> None:
    """Loading local weights needs no progress bars or hub chatter on the user's terminal."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
