"""Where models come from, without torch: presets, shipped weights, checkpoint configs.

`peek_model` tells the indexer a model's config and (for checkpoints) its fingerprint without
building it, so a run with nothing to embed never loads the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from collap_model.config import ModelConfig, load_preset, preset_names

FORMAT_VERSION = 1
DEFAULT_MODEL = "collap-tagger"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# seeds the random initialisation of a preset that has no shipped weights, so that every
# machine builds the same untrained model (and fingerprint)
INIT_SEED = 0


class CheckpointError(ValueError):
    """A checkpoint that is missing, malformed or does not fit its config."""


def shipped_weights_dir(name: str) -> Path | None:
    """The packaged checkpoint directory of preset `name`, if weights ship for it."""
    entry = resources.files("collap_model") / "weights" / name
    if entry.is_dir() and (entry / WEIGHTS_FILE).is_file():
        return Path(str(entry))
    return None


def read_checkpoint_config(directory: Path) -> tuple[ModelConfig, bool, str | None]:
    """A checkpoint's config, whether it is trained, and its recorded fingerprint."""
    path = directory / CONFIG_FILE
    try:
        meta = json.loads(path.read_text())
    except OSError as err:
        raise CheckpointError(
            f"{directory} is not a CoLLAP checkpoint: cannot read {CONFIG_FILE}"
        ) from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION or "config" not in meta:
        raise CheckpointError(f"{path}: not a CoLLAP checkpoint of format {FORMAT_VERSION}")
    config = ModelConfig.from_json(json.dumps(meta["config"]), str(path))
    recorded = meta.get("fingerprint")
    return config, bool(meta.get("trained", False)), str(recorded) if recorded else None


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and what its checkpoint records (nothing built)."""

    name: str
    directory: Path | None  # checkpoint folder; None: a preset without shipped weights
    config: ModelConfig
    trained: bool
    fingerprint: str | None  # recorded in the checkpoint; None when it must be computed


def locate_model(name_or_path: str | Path | None) -> ModelSource:
    """None (the shipped default), a preset name, or a checkpoint directory."""
    name = DEFAULT_MODEL if name_or_path is None else str(name_or_path)
    if name in preset_names():
        directory = shipped_weights_dir(name)
        if directory is None:
            return ModelSource(name, None, load_preset(name), False, None)
    else:
        directory = Path(name).expanduser()
        if not directory.is_dir():
            raise CheckpointError(
                f"no model {name!r}: not a preset ({', '.join(preset_names())}) "
                "nor a checkpoint directory"
            )
    return ModelSource(name, directory, *read_checkpoint_config(directory))


def peek_model(name_or_path: str | Path | None) -> tuple[ModelConfig, str | None]:
    """The config of a model and its recorded fingerprint (None when it must be computed)."""
    source = locate_model(name_or_path)
    return source.config, source.fingerprint
