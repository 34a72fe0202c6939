"""The tagged audio encoder and the text side's tag bridge (collap-tagger and presets like it)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from collap_model import load_model, save_checkpoint
from collap_model.config import load_preset
from collap_model.model import CoLLAP
from collap_model.outputs import ClipBatch
from collap_model.registry import shipped_weights_dir
from collap_model.tagger.labels import LABELS
from tests.conftest import tone


@pytest.fixture(scope="module")
def tagged() -> CoLLAP:
    return load_model("collap-tagger", device="cpu")


def test_clips_carry_tags_and_their_z_scores(tagged: CoLLAP) -> None:
    emb = tagged.encode_audio(tone(32.0, 330.0), 16_000)
    k = tagged.config.tag_dims
    assert tagged.tag_names == LABELS["MTT_musicnn"] + LABELS["MSD_musicnn"]
    assert emb.tags is not None and emb.tags.shape == (emb.clips.shape[0], k) == (6, 100)
    assert bool(((emb.tags >= 0) & (emb.tags <= 1)).all())
    enc = tagged.audio_encoder
    z = (emb.tags - enc.tag_mean) / enc.tag_std
    tag_block = torch.sin(enc.theta) * F.normalize(z, dim=-1)
    assert torch.allclose(emb.clips[:, -k:], tag_block, atol=1e-4)
    assert torch.allclose(emb.clips.norm(dim=-1), torch.ones(6), atol=1e-5)


def test_encode_clips_gives_the_tags_of_encode_audio(tagged: CoLLAP) -> None:
    wave = tone(10.0, 440.0)
    whole = tagged.encode_audio(wave, 16_000)
    out = tagged.encode_clips(wave[None], torch.tensor([wave.shape[0]]), torch.tensor([0]))
    assert out.tags is not None and whole.tags is not None
    assert torch.allclose(out.tags, whole.tags) and torch.allclose(out.embeddings, whole.clips)


def test_bridge_points_a_text_at_the_tags_it_names(tagged: CoLLAP) -> None:
    text = tagged.encode_text(["solo piano", "heavy metal with distorted guitars", "glockenspiel"])
    assert text.tags is not None and text.tags.shape == (3, 100)
    assert torch.allclose(text.tags.norm(dim=-1), torch.ones(3), atol=1e-5)
    names = tagged.tag_names
    top = [{names[int(i)] for i in row.topk(3).indices} for row in text.tags]
    assert "piano" in top[0] and "solo" in top[0]
    assert top[1] & {"metal", "heavy metal"}
    assert bool(torch.isfinite(text.tags[2]).all())  # a word no tag names still gives a vector


def test_bridge_joins_the_text_vector_through_the_pattern_choice(tagged: CoLLAP) -> None:
    """v_h = α Σ_l β_l π_lh u_l + γ π̄_h [0 ; b] (fusion.py): with the bridge, the learned path
    is weighted by α (learned_gain) and γ π̄_h b is added to the tag block of each pattern's
    vector, nothing elsewhere."""
    text = tagged.encode_text(["quiet piano piece", "loud rock"])
    assert text.tags is not None
    with torch.inference_mode():
        with_bridge, pi_bar = tagged.fusion.text_vectors(text)
        without, _ = tagged.fusion.text_vectors(replace(text, tags=None))
        expected = tagged.fusion.bridge_gain * pi_bar[..., None] * text.tags[:, None, :]
        learned = tagged.fusion.learned_gain * without
    k = tagged.config.tag_dims
    assert torch.allclose(with_bridge[..., :-k], learned[..., :-k], atol=1e-6)
    assert torch.allclose(with_bridge[..., -k:] - learned[..., -k:], expected, atol=1e-6)


def test_checkpoint_references_the_tagger_and_stores_what_training_sets(
    tagged: CoLLAP, tmp_path: Path
) -> None:
    out = save_checkpoint(tagged, tmp_path / "ckpt")
    state = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("audio_encoder.tagger.") for k in state)
    assert {"text_encoder.tag_prompts", "audio_encoder.tag_mean", "audio_encoder.theta"} <= set(
        state
    )
    loaded = load_model(out, device="cpu")
    assert loaded.fingerprint == tagged.fingerprint
    wave = tone(15.0, 392.0)
    assert torch.equal(
        loaded.encode_audio(wave, 16_000).clips, tagged.encode_audio(wave, 16_000).clips
    )


def test_models_without_a_tagger_keep_their_fingerprint() -> None:
    """Fields added for the tagger must not change what older presets hash."""
    shipped = shipped_weights_dir("collap-mini")
    assert shipped is not None
    mini = load_model("collap-mini", device="cpu")
    recorded = (shipped / "config.json").read_text()
    assert mini.fingerprint in recorded
    assert mini.tag_names == () and mini.encode_audio(tone(5.0, 440.0), 16_000).tags is None
    assert "tagger" not in load_preset("collap-mini").architecture()["audio"]


def test_locate_gives_per_clip_evidence_that_depends_on_the_text(tagged: CoLLAP) -> None:
    short = tagged.encode_audio(tone(12.0, 220.0), 16_000)
    long = tagged.encode_audio(tone(40.0, 440.0), 16_000)
    texts = tagged.encode_text(["a quiet opening", "the drums come in near the end"])
    evidence = tagged.locate(texts, [short, long])
    n_short, n_long = short.clips.shape[0], long.clips.shape[0]
    assert evidence.shape == (2, 2, n_long)
    assert bool(torch.isinf(evidence[:, 0, n_short:]).all())
    assert bool(torch.isfinite(evidence[:, 1]).all())
    assert not torch.allclose(evidence[0, 1], evidence[1, 1])
    alone = tagged.locate(texts.select(1), [long])
    assert torch.allclose(alone[0, 0], evidence[1, 1], atol=1e-5)


def test_without_a_locator_locate_is_the_fusions_clip_match() -> None:
    model = load_model("collap-mini", device="cpu")
    song = model.encode_audio(tone(30.0, 330.0), 16_000)
    text = model.encode_text(["strings swell"])
    assert torch.allclose(model.locate(text, [song]), model.score(text, [song]).clip_scores)


def test_placement_rewrites_a_checkpoint_and_keeps_its_weights(
    tagged: CoLLAP, tmp_path: Path
) -> None:
    from collap_model.cli import main

    out = save_checkpoint(tagged, tmp_path / "ckpt")
    weights = load_file(str(out / "model.safetensors"))
    placement = tagged.config.audio.tagger.patch_placement  # type: ignore[union-attr]
    other = "centre" if placement == "shared" else "shared"
    assert main(["placement", str(out), other]) == 0
    moved = load_model(out, device="cpu")
    assert (
        moved.fingerprint != tagged.fingerprint
        and moved.fingerprint in (out / "config.json").read_text()
    )
    rewritten = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(v, rewritten[k]) for k, v in weights.items())
    wave = torch.cat([tone(8.0, f) for f in (220.0, 330.0, 440.0, 554.0)])  # changes in time
    a, b = moved.encode_audio(wave, 16_000), tagged.encode_audio(wave, 16_000)
    assert a.clips.shape == b.clips.shape and not torch.allclose(a.clips, b.clips)
    assert main(["placement", str(out), str(placement)]) == 0
    assert load_model(out, device="cpu").fingerprint == tagged.fingerprint


def test_placement_of_a_model_without_a_tagger_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from collap_model.cli import main

    shipped = shipped_weights_dir("collap-mini")
    assert shipped is not None
    assert main(["placement", str(shipped), "shared"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no tagger" in err


def test_a_locator_with_context_reads_the_whole_song_and_explains_only(tagged: CoLLAP) -> None:
    from collap_model.training.locator import with_locator

    short = tagged.encode_audio(tone(12.0, 220.0), 16_000)
    wave = torch.cat([tone(10.0, f) for f in (220.0, 330.0, 440.0, 554.0)])
    long = tagged.encode_audio(wave, 16_000)
    texts = tagged.encode_text(["a quiet opening", "the second chorus brings in the flute"])
    plain = with_locator(load_model("collap-tagger", device="cpu"), layers=0, seed=5)
    model = with_locator(load_model("collap-tagger", device="cpu"), layers=1, seed=5)
    assert model.config.fusion.locator_layers == 1 and model.fingerprint != plain.fingerprint
    evidence = model.locate(texts, [short, long])
    n_short, n_long = short.clips.shape[0], long.clips.shape[0]
    assert evidence.shape == (2, 2, n_long) and bool(torch.isinf(evidence[:, 0, n_short:]).all())
    # every pair alone, padded or not, gives what the batch does; so does training's pass
    for i in range(2):
        for j, song in enumerate((short, long)):
            alone = model.locate(texts.select(i), [song])[0, 0]
            assert torch.allclose(alone, evidence[i, j, : song.clips.shape[0]], atol=1e-4)
    where = model.fusion.where
    assert where is not None
    with torch.inference_mode():
        aligned = where.aligned(texts, ClipBatch.of([short, long]))
    assert torch.allclose(aligned[0, :n_short], evidence[0, 0, :n_short], atol=1e-4)
    assert torch.allclose(aligned[1], evidence[1, 1], atol=1e-4)
    # context: what a clip's evidence is depends on clips far from it, unlike the plain head's
    changed = tagged.encode_audio(torch.cat([tone(10.0, 880.0), wave[160_000:]]), 16_000)
    last = slice(n_long - 2, n_long)
    with_context = model.locate(texts, [long, changed])[1, :, last]
    assert not torch.allclose(with_context[0], with_context[1], atol=1e-4)
    without = plain.locate(texts, [long, changed])[1, :, last]
    assert torch.allclose(without[0], without[1], atol=1e-4)
    # the score never reads the locator
    assert torch.equal(model.score(texts, [long]).scores, plain.score(texts, [long]).scores)


def test_locator_layers_need_a_locator_and_leave_old_fingerprints_alone() -> None:
    from collap_model.config import ConfigError, ModelConfig

    config = load_preset("collap-tagger")
    assert "locator_layers" not in config.architecture()["fusion"]  # type: ignore[operator]
    data = config.model_dump(mode="json")
    data["fusion"].update(locator=False, locator_layers=2)
    with pytest.raises(ConfigError, match="locator_layers needs locator"):
        ModelConfig.from_json(json.dumps(data))


def test_a_locator_reading_the_sentence_hears_the_text_whole(tagged: CoLLAP) -> None:
    from collap_model.config import ConfigError, ModelConfig
    from collap_model.training.locator import with_locator

    song = tagged.encode_audio(torch.cat([tone(10.0, f) for f in (220.0, 440.0, 660.0)]), 16_000)
    texts = tagged.encode_text(["the chorus brings in the flute", "\x00"])
    plain = with_locator(load_model("collap-tagger", device="cpu"), layers=1, seed=5)
    model = with_locator(load_model("collap-tagger", device="cpu"), layers=1, seed=5, sentence=True)
    assert model.fingerprint != plain.fingerprint
    assert "locator_sentence" not in plain.config.architecture()["fusion"]  # type: ignore[operator]
    # the same words with another sentence embedding are placed otherwise; the plain head
    # never reads it
    other = replace(texts, sentence=texts.sentence.roll(1, dims=1))
    assert not torch.allclose(model.locate(texts, [song])[0], model.locate(other, [song])[0])
    assert torch.equal(plain.locate(texts, [song])[0], plain.locate(other, [song])[0])
    # a text of no tokens has no sentence (its empty pool): it still asks nothing
    assert torch.equal(model.locate(texts, [song])[1], torch.zeros(1, song.clips.shape[0]))
    data = load_preset("collap-tagger").model_dump(mode="json")
    data["fusion"].update(locator=False, locator_sentence=True)
    with pytest.raises(ConfigError, match="locator_sentence needs locator"):
        ModelConfig.from_json(json.dumps(data))


def test_a_text_of_no_tokens_asks_nothing_of_the_context_locator(tagged: CoLLAP) -> None:
    from collap_model.light import load_light

    song = tagged.encode_audio(tone(30.0, 330.0), 16_000)
    nothing = tagged.encode_text(["\x00"])  # the tokenizer reads it as no token at all
    assert nothing.tokens.shape[1] == 0
    assert torch.equal(tagged.locate(nothing, [song]), torch.zeros(1, 1, song.clips.shape[0]))
    light = load_light("collap-tagger")
    assert light is not None
    evidence = light.evidence(light.encode("\x00"), [song.clips.numpy()], [song.clip_times.numpy()])
    assert (evidence == 0).all()
    beside = tagged.locate(tagged.encode_text(["\x00", "drums enter"]), [song])
    assert bool(torch.isfinite(beside).all())
