from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from collap_model import load_model, save_checkpoint
from collap_model.checkpoint import CheckpointError, resolve_device
from collap_model.config import ConfigError, FrontendConfig, load_preset
from collap_model.model import CoLLAP
from tests.conftest import tone


def test_round_trip_gives_identical_outputs(model: CoLLAP, tmp_path: Path) -> None:
    save_checkpoint(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", device="cpu")
    assert loaded.fingerprint == model.fingerprint
    wave = tone(30.0, 523.0)
    a, b = model.encode_audio(wave, 16_000), loaded.encode_audio(wave, 16_000)
    assert torch.equal(a.clips, b.clips) and torch.equal(a.song, b.song)
    ta, tb = model.encode_text(["piano then drums"]), loaded.encode_text(["piano then drums"])
    assert torch.equal(ta.tokens, tb.tokens) and torch.equal(ta.sentence, tb.sentence)
    assert torch.equal(model.score(ta, [a]).scores, loaded.score(tb, [b]).scores)


def test_checkpoint_stores_no_frozen_backbone(model: CoLLAP, tmp_path: Path) -> None:
    out = save_checkpoint(model, tmp_path / "ckpt")
    size = (out / "model.safetensors").stat().st_size
    assert size < 10_000_000  # the 90 MB MiniLM is referenced, not copied


def test_fingerprint_follows_weights_and_frontend(tmp_path: Path) -> None:
    base = load_model("collap-mini", device="cpu")
    before = base.fingerprint
    with torch.no_grad():
        base.fusion.w_beta.bias.add_(0.1)
    assert base.fingerprint != before
    preset = load_preset("collap-mini")
    moved = preset.model_copy(update={"frontend": FrontendConfig(hop_seconds=2.5)})
    with pytest.raises(CheckpointError, match="hop_seconds"):
        load_model("collap-mini", device="cpu", config=moved)
    other = CoLLAP(moved)
    other.load_state_dict(load_model("collap-mini", device="cpu").state_dict())
    assert other.fingerprint != before


def test_incompatible_checkpoint_fails_clearly(model: CoLLAP, tmp_path: Path) -> None:
    out = save_checkpoint(model, tmp_path / "ckpt")
    meta = json.loads((out / "config.json").read_text())
    meta["config"]["embed_dim"] = 128
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"does not fit.*shape mismatch"):
        load_model(out, device="cpu")
    meta["config"]["embed_dim"] = "wide"
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="embed_dim"):
        load_model(out, device="cpu")


def test_unknown_model_and_device_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a preset"):
        load_model(tmp_path / "nothing-here")
    with pytest.raises(CheckpointError, match="not a CoLLAP checkpoint"):
        load_model(tmp_path)
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


def test_paper_presets_need_local_backbones(tmp_path: Path) -> None:
    for name in ("collap-paper-encoder", "collap-paper-decoder"):
        cfg = load_preset(name)
        assert cfg.audio.backbone and cfg.text.backbone
        with pytest.raises(ConfigError, match="local directories only"):
            CoLLAP(
                cfg.model_copy(
                    update={"audio": cfg.audio.model_copy(update={"backbone": str(tmp_path)})}
                )
            )
