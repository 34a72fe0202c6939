"""Checkpoints (safetensors + JSON config), the weights registry, and `load_model`.

A checkpoint is a directory:
    config.json        {"format": 1, "config": <ModelConfig>, "trained": bool, "fingerprint": str}
    model.safetensors  the owned weights (frozen pretrained backbones are referenced, not copied)

Shipped weights live in collap_model/weights/<preset>/ and are found by preset name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from collap_model.config import ConfigError, ModelConfig
from collap_model.model import CoLLAP
from collap_model.registry import (
    CONFIG_FILE,
    FORMAT_VERSION,
    INIT_SEED,
    WEIGHTS_FILE,
    CheckpointError,
    locate_model,
)
from collap_model.text_encoder import TextBackend

__all__ = ["CheckpointError", "load_model", "resolve_device", "save_checkpoint"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`: cuda when available, else cpu; "cpu"/"cuda"/"cuda:N" as given."""
    if isinstance(device, torch.device):
        return device
    match device:
        case "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        case "cpu":
            return torch.device("cpu")
        case str() if device == "cuda" or device.startswith("cuda:"):
            if not torch.cuda.is_available():
                raise ConfigError(f"device {device!r} requested but CUDA is not available")
            return torch.device(device)
        case _:
            raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def save_checkpoint(model: CoLLAP, directory: str | Path) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.owned_state().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": str(FORMAT_VERSION)})
    meta = {
        "format": FORMAT_VERSION,
        "config": model.config.model_dump(mode="json"),
        "trained": model.trained,
        "fingerprint": model.fingerprint,
    }
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def load_weights(model: CoLLAP, weights: Path) -> None:
    """Load owned weights, failing with a message naming every mismatch."""
    try:
        state = load_file(str(weights))
    except (OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot read weights {weights}: {err}") from err
    expected = model.owned_state()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"shape mismatch in {len(wrong)} tensors (first: {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} tensors missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
        raise CheckpointError(
            f"checkpoint {weights.parent} does not fit config {model.config.name!r}: "
            + "; ".join(parts)
        )
    model.load_state_dict(state, strict=False)


def load_model(
    name_or_path: str | Path | None = None,
    device: str | torch.device = "auto",
    config: ModelConfig | None = None,
    text_backend: TextBackend = TextBackend.TRANSFORMERS,
) -> CoLLAP:
    """Load a CoLLAP model in eval mode.

    name_or_path: None (the shipped default, registry.DEFAULT_MODEL), a preset name (its shipped
    weights, or a seeded random initialisation when none ship), or a checkpoint directory.
    config: optionally the config the caller expects; a checkpoint whose architecture differs
    is refused with a message naming the differing fields.
    text_backend: what runs the pretrained text backbone (text_encoder.TextBackend); a model
    without weights whose tag prompts must be computed keeps transformers, because those
    prompts go into its fingerprint and every process must compute the same bytes.
    """
    target = resolve_device(device)
    source = locate_model(name_or_path)
    name, directory, stored, trained = source.name, source.directory, source.config, source.trained
    if config is not None and config.architecture() != stored.architecture():
        diff = _differences(stored.architecture(), config.architecture())
        raise CheckpointError(
            f"checkpoint {name!r} was saved with another architecture than the given config: {diff}"
        )
    use = config or stored
    if directory is None and use.audio.tagger is not None:
        text_backend = TextBackend.TRANSFORMERS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(INIT_SEED)
        model = CoLLAP(use, trained=trained, text_backend=text_backend)
    if directory is not None:
        load_weights(model, directory / WEIGHTS_FILE)
    else:
        model.prepare_new()
    return model.to(target).eval()


def _differences(a: object, b: object, prefix: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        parts = [
            _differences(a.get(k), b.get(k), f"{prefix}{k}.")
            for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)
        ]
        return "; ".join(p for p in parts if p)
    return f"{prefix.rstrip('.')}: checkpoint {a!r}, given {b!r}"
