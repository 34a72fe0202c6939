"""The recipe end to end on a tiny synthetic dataset: train, resume, evaluate (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from collap_model import load_model
from collap_model.cli import build_parser
from collap_model.config import load_preset
from collap_model.model import CoLLAP
from collap_model.synth.dataset import read_manifest
from collap_model.training.attributes import label_names
from collap_model.training.cache import text_cache
from collap_model.training.cli import recipe_of
from collap_model.training.evaluate import (
    both_ways,
    resampled_interval,
    retrieval_metrics,
    timed_sentences,
)
from collap_model.training.train import Recipe, train
from tests.collap_model.test_synth import TIMGM, needs_fluidsynth

METRICS = {"R@1", "R@5", "R@10", "MedR", "mAP"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from collap_model.synth.dataset import generate_dataset

    out = tmp_path_factory.mktemp("tiny-data")
    generate_dataset(out, 6, seed=11, soundfont=TIMGM, min_seconds=30, max_seconds=34, jobs=2)
    return out


def test_metrics_on_known_rankings() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8], [0.5, 0.6, 0.1]])
    m = retrieval_metrics(scores, [{0}, {1}, {1}])
    assert m["R@1"] == pytest.approx(2 / 3)
    assert m["MedR"] == 1.0 and m["R@5"] == 1.0
    assert m["mAP"] == pytest.approx((1 + 1 / 3 + 1) / 3)
    both = both_ways(scores, [0, 1, 1])
    assert set(both) == {"text_to_audio", "audio_to_text"}
    assert both["audio_to_text"]["mAP"] == pytest.approx((1 + (1 / 1 + 2 / 3) / 2) / 2)


def test_the_resampled_interval_holds_the_figure_and_narrows_with_more_texts() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(400, 30, generator=gen)
    relevant = [{q % 30} for q in range(400)]
    scores[torch.arange(0, 400, 3), torch.arange(0, 400, 3) % 30] += 1.0  # a third ranked first
    few = resampled_interval(scores[:40], relevant[:40])
    many = resampled_interval(scores, relevant)
    for name, m in (("few", retrieval_metrics(scores[:40], relevant[:40])),
                    ("many", retrieval_metrics(scores, relevant))):  # fmt: skip
        got = few if name == "few" else many
        for k in ("R@1", "R@10", "mAP"):
            assert got[k][0] <= m[k] <= got[k][1], (name, k)
    assert many["R@1"][1] - many["R@1"][0] < few["R@1"][1] - few["R@1"][0]
    assert resampled_interval(scores[:40], relevant[:40]) == few  # seeded
    perfect = resampled_interval(torch.eye(5), [{i} for i in range(5)])
    assert perfect == {"R@1": [1.0, 1.0], "R@10": [1.0, 1.0], "mAP": [1.0, 1.0]}


@needs_fluidsynth
def test_eval_of_clips_with_their_texts_says_how_far_the_figures_could_move(
    dataset: Path, tmp_path: Path
) -> None:
    # a set like ../shared/external-dev: `audio` + `text` per clip, some texts with two clips
    songs = read_manifest(dataset / "manifest.jsonl")
    lines = [{"audio": str(e.audio_path), "text": f"text {i // 2}"} for i, e in enumerate(songs)]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    command = [sys.executable, "-m", "collap_model.cli", "eval", "collap-tagger", str(tmp_path),
               "--cache", str(tmp_path / "cache"), "--device", "cpu"]  # fmt: skip
    out = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["texts"] == 3 and result["clips"] == 6
    for k, (low, high) in result["fusion_interval"].items():
        assert 0 <= low <= result["fusion"][k] <= high <= 1
    shown = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert shown.returncode == 0 and "Traceback" not in shown.stderr
    assert "fusion on another 3 texts of this kind" in shown.stdout


@needs_fluidsynth
def test_train_resumes_to_the_same_weights(dataset: Path, tmp_path: Path) -> None:
    recipe = Recipe(steps=4, batch=4, eval_every=2, val_songs=1, lr=1e-3, device="cpu")
    straight = train(dataset / "manifest.jsonl", tmp_path / "a", recipe)
    stopped = train(dataset / "manifest.jsonl", tmp_path / "b", recipe, stop_after=2)
    assert stopped["stopped_at"] == 2 and not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train(dataset / "manifest.jsonl", tmp_path / "b", recipe)
    assert resumed["fingerprint"] == straight["fingerprint"]
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["trained"] is True and meta["fingerprint"] == straight["fingerprint"]
    # the attribute head learnt every label the manifest's sections fill
    state = torch.load(tmp_path / "a" / "train_state.pt", weights_only=False)
    labels = label_names(read_manifest(dataset / "manifest.jsonl"))
    assert state["attributes"]["proj.weight"].shape[0] == len(labels) > 20
    assert [h["step"] for h in straight["history"]] == [2, 4]
    with pytest.raises(ValueError, match="another recipe"):
        train(
            dataset / "manifest.jsonl",
            tmp_path / "b",
            Recipe(steps=5, batch=4, eval_every=2, val_songs=1, device="cpu"),
        )


@needs_fluidsynth
def test_training_starts_from_a_seeded_initialisation_not_the_shipped_weights(
    dataset: Path, tmp_path: Path
) -> None:
    recipe = Recipe(steps=1, batch=4, eval_every=1, val_songs=1, lr=0.0, device="cpu", seed=3)
    report = train(dataset / "manifest.jsonl", tmp_path / "zero", recipe)
    torch.manual_seed(3)
    assert report["fingerprint"] == CoLLAP(load_preset("collap-mini")).fingerprint
    assert report["fingerprint"] != load_model(device="cpu").fingerprint


@needs_fluidsynth
def test_eval_json_reports_fusion_and_baselines(dataset: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "collap_model.cli", "eval", "collap-mini", str(dataset), "--json",
         "--cache", str(tmp_path / "cache"), "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for scorer in ("fusion", "mean_pool", "random"):
        for direction in ("text_to_audio", "audio_to_text"):
            m = result[scorer][direction]
            assert set(m) == METRICS
            assert (
                0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 1 and 0 < m["mAP"] <= 1 and m["MedR"] >= 1
            )
        assert set(result[scorer]) >= {"captions", "queries"}
    assert result["songs"] == 6 and result["texts"]["captions"] == 6
    located = result["localisation"]
    assert set(located) == {"sentences", "queries"}
    for loc in located.values():
        assert set(loc) == {
            "texts", "locate", "fusion_weight", "most_similar_clip", "uniform_chance"
        }  # fmt: skip
        assert loc["texts"] > 0 and 0 < loc["uniform_chance"] <= 1
        assert all(0 <= loc[k] <= 1 for k in ("locate", "fusion_weight", "most_similar_clip"))


def test_timed_sentences_parse_caption_times() -> None:
    class E:
        caption = "Piano. The verse arrives at 0:16, with bass. At 1:05 drums enter; an outro."

    items = timed_sentences([E()])  # type: ignore[list-item]
    assert items == [(0, "The verse arrives, with bass.", 16.0), (0, "Drums enter;", 65.0)]


def test_the_text_cache_keeps_each_text_at_its_place_whatever_the_batching() -> None:
    model = CoLLAP(load_preset("collap-mini"))
    long = "A soft piano opens the song and strings enter later on. " * 30
    texts = ["jazz tune with flute", long, "rock song with drums", long + "It ends.", "a fade"]
    with tempfile.TemporaryDirectory() as folder:
        cache = text_cache(model, texts, Path(folder))
        alone = [model.text_encoder.hidden_states([t]) for t in texts]
        for k, (tokens, pooled) in enumerate(alone):
            got = cache.states([k])
            assert got.tokens[0].shape == tokens[0].shape
            assert torch.allclose(got.tokens[0], tokens[0], atol=2e-2)
            assert torch.allclose(got.pooled[0], pooled[0], atol=2e-2)


def test_train_without_options_runs_the_default_recipe() -> None:
    args = build_parser().parse_args(["train", "DATA", "--out", "RUN"])
    assert recipe_of(args) == Recipe()
    assert Recipe().steps == 2400


@needs_fluidsynth
def test_a_tagged_model_can_keep_the_compact_stages_of_another(
    dataset: Path, tmp_path: Path
) -> None:
    recipe = Recipe(
        preset="collap-tagger", steps=3, batch=4, eval_every=3, val_songs=1, device="cpu",
        compact_from="collap-mini",
    )  # fmt: skip
    report = train(dataset / "manifest.jsonl", tmp_path / "run", recipe)
    trained = load_model(tmp_path / "run", device="cpu")
    donor = load_model("collap-mini", device="cpu")
    for part in ("stages", "pool_logit"):
        mine = getattr(trained.audio_encoder, part).state_dict()
        theirs = getattr(donor.audio_encoder, part).state_dict()
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # copied, never trained
    # the heads did train: they differ from the seeded initialisation
    torch.manual_seed(0)
    fresh = CoLLAP(load_preset("collap-tagger"))
    head = trained.audio_encoder.head.state_dict()
    assert any(
        not torch.equal(head[k], v) for k, v in fresh.audio_encoder.head.state_dict().items()
    )
    # so did the locator, from the captions' timed sentences (its only loss)
    where = trained.fusion.where.state_dict()
    assert any(not torch.equal(where[k], v) for k, v in fresh.fusion.where.state_dict().items())
    assert report["steps"] == 3
    with pytest.raises(ValueError, match="tagged preset"):
        train(dataset / "manifest.jsonl", tmp_path / "bad", replace(recipe, preset="collap-mini"))


def test_calibration_sets_the_learned_gain_its_measure_prefers() -> None:
    from collap_model.training.calibrate import GAINS, calibrate

    model = CoLLAP(load_preset("collap-tagger"))

    def measure(m: CoLLAP, songs: object) -> dict[str, float]:
        g = float(m.fusion.learned_gain)
        return {"mAP": 1.0 - abs(g - 0.2)}  # best at 0.2, whatever the set

    result = calibrate(model, {"a": [0, 1], "b": [2, 3, 4], "tiny": [5]}, measure)
    assert result["learned_gain"] == 0.2
    assert float(model.fusion.learned_gain) == pytest.approx(0.2)
    assert set(result["gains"]) == {f"{g:g}" for g in GAINS}
    assert result["sets"] == {"a": 2, "b": 3}  # a one-song set cannot rank anything
    # α scales the learned token path only: at 0 a text vector is its bridge alone
    text = model.encode_text(["soft piano"])
    model.fusion.learned_gain.fill_(0.0)
    with torch.inference_mode():
        v, pi_bar = model.fusion.text_vectors(text)
        expected = model.fusion.bridge_gain * pi_bar[..., None] * text.tags[:, None, :]
    k = model.config.tag_dims
    assert torch.count_nonzero(v[..., :-k]) == 0
    assert torch.allclose(v[..., -k:], expected, atol=1e-6)
    assert calibrate(CoLLAP(load_preset("collap-mini")), {"a": [0, 1]}, measure) == {}


@needs_fluidsynth
def test_the_locator_trains_alone_resumes_and_leaves_the_scores_alone(
    dataset: Path, tmp_path: Path
) -> None:
    from collap_model.cli import main
    from collap_model.training.locator import (
        LocatorRecipe,
        locator_loss,
        prepare_timed,
        train_locator,
        with_locator,
    )

    manifest = dataset / "manifest.jsonl"
    options = ["--layers", "1", "--steps", "30", "--batch", "16", "--lr", "3e-3"]
    options += ["--warmup", "3", "--eval-every", "15", "--val-songs", "1", "--device", "cpu"]
    options += ["--sentence", "--word-dropout", "0.2"]
    assert main(["locator", "default", str(dataset), "--out", str(tmp_path / "a"), *options]) == 0
    recipe = LocatorRecipe(
        layers=1, steps=30, batch=16, lr=3e-3, warmup=3, eval_every=15, val_songs=1, device="cpu",
        sentence=True, word_dropout=0.2,
    )  # fmt: skip
    stopped = train_locator("default", [manifest], tmp_path / "b", recipe, stop_after=15)
    assert stopped["stopped_at"] == 15 and not (tmp_path / "b" / "model.safetensors").exists()
    resumed = train_locator("default", [manifest], tmp_path / "b", recipe)
    trained = load_model(tmp_path / "a", device="cpu")
    assert resumed["fingerprint"] == trained.fingerprint
    assert trained.config.fusion.locator_layers == 1 and trained.config.fusion.locator_sentence
    base = load_model(None, device="cpu")
    mine, theirs = trained.owned_state(), base.owned_state()
    # everything but the locator is the source's, byte for byte: scores and index vectors hold
    kept = [k for k in theirs if not k.startswith("fusion.where.")]
    assert kept and all(torch.equal(mine[k], theirs[k]) for k in kept)
    assert any(k.startswith("fusion.where.context.") for k in mine)
    # it learnt: the loss on the training texts fell from the fresh head's
    fresh = with_locator(load_model(None, device="cpu"), layers=1, seed=0, sentence=True)
    data = prepare_timed(fresh, [manifest], tmp_path / "texts")
    train_texts = [k for k, s in enumerate(data.song) if s < 5]
    with torch.no_grad():
        before = locator_loss(fresh, data, train_texts, recipe.neighbour).item()
        after = locator_loss(trained, data, train_texts, recipe.neighbour).item()
    assert after < before - 0.1
    with pytest.raises(ValueError, match="another recipe"):
        train_locator("default", [manifest], tmp_path / "b", LocatorRecipe(layers=2, steps=30))


def test_word_swap_reads_some_words_as_other_texts_words_and_never_touches_the_rest() -> None:
    import numpy as np

    from collap_model.text_encoder import TextStates
    from collap_model.training.cache import TextCache
    from collap_model.training.locator import swap_words

    # two texts of 3 and 2 tokens, each token's state a distinct constant row
    tokens = np.arange(5, dtype=np.float16)[:, None].repeat(4, axis=1)
    cache = TextCache(tokens, np.array([0, 3, 5]), np.zeros((2, 4), dtype=np.float16))
    states = cache.states([0, 1])
    assert all(
        torch.equal(a, b)
        for a, b in zip(swap_words(states, cache, 0.0, None).tokens, states.tokens, strict=True)
    )
    # replace every token, seeded: each row is some cache row, the same with the same seed,
    # and the pooled states are left as they were
    swapped = swap_words(states, cache, 1.0, torch.Generator().manual_seed(0))
    again = swap_words(states, cache, 1.0, torch.Generator().manual_seed(0))
    assert isinstance(swapped, TextStates) and swapped.pooled is states.pooled
    rows = {float(r) for t in swapped.tokens for r in t[:, 0]}
    assert rows <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert [t.shape for t in swapped.tokens] == [(3, 4), (2, 4)]
    assert all(torch.equal(a, b) for a, b in zip(swapped.tokens, again.tokens, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(swapped.tokens, states.tokens, strict=True))
    assert torch.equal(states.tokens[0][:, 0], torch.tensor([0.0, 1.0, 2.0]))  # a copy swapped


def test_name_swap_reads_a_texts_section_names_as_other_words_and_nothing_else() -> None:
    import numpy as np

    from collap_model.text_encoder import TextStates
    from collap_model.training.cache import TextCache
    from collap_model.training.locator import section_tokens, swap_names

    model = load_model("collap-tagger", device="cpu")
    texts = ["the second chorus brings in the flute", "the outro segment ends it", "drums enter"]
    names = section_tokens(model, texts)
    tokenizer = model.text_encoder.tokenizer
    spelled = [
        [tokenizer.convert_ids_to_tokens(i) for i, k in zip(ids, m, strict=True) if k]
        for ids, m in zip(model.text_encoder.tokenize(texts), names, strict=True)
    ]
    assert spelled == [["chorus"], ["out", "##ro", "segment"], []]
    # tokens as distinct constant rows 100 + position; the cache's rows are 0..4
    states = [torch.full((len(m), 4), 100.0) + torch.arange(len(m))[:, None] for m in names]
    cache = TextCache(np.arange(5, dtype=np.float16)[:, None].repeat(4, axis=1),
                      np.array([0, 5]), np.zeros((1, 4), dtype=np.float16))  # fmt: skip
    given = TextStates(states, [t.mean(dim=0) for t in states])
    kept = swap_names(given, names, cache, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(kept.tokens, states, strict=True))
    swapped = swap_names(given, names, cache, 1.0, torch.Generator().manual_seed(0))
    for tokens, before, mask in zip(swapped.tokens, states, names, strict=True):
        assert torch.equal(tokens[~torch.from_numpy(mask)], before[~torch.from_numpy(mask)])
        assert bool((tokens[torch.from_numpy(mask)] < 5).all())
    assert swapped.pooled is given.pooled and torch.equal(states[0][2], torch.full((4,), 102.0))


def test_a_hidden_word_is_hidden_from_the_sentence_the_locator_reads_too() -> None:
    from collap_model.text_encoder import TextStates
    from collap_model.training.locator import kept_sentences

    model = load_model("collap-tagger", device="cpu")
    texts = ["the second chorus brings in the flute", "a quiet intro"]
    with torch.no_grad():
        states = TextStates(*model.text_encoder.hidden_states(texts))
        whole = model.text_encoder(states)
    keep = whole.mask.clone()
    assert torch.allclose(kept_sentences(model, states, keep), whole.sentence, atol=1e-5)
    keep[0, 1:3] = False  # "second chorus" hidden from the first text
    got = kept_sentences(model, states, keep)
    rest = torch.cat([states.tokens[0][:1], states.tokens[0][3:]])
    with torch.no_grad():
        want = model.text_encoder(TextStates([rest], [rest.mean(dim=0)])).sentence[0]
    assert torch.allclose(got[0], want, atol=1e-5) and not torch.allclose(got[0], whole.sentence[0])
    assert torch.allclose(got[1], whole.sentence[1], atol=1e-5)


@pytest.mark.parametrize("option", ["--word-dropout", "--word-swap"])
@pytest.mark.parametrize("value", ["-0.1", "1.5", "often"])
def test_a_locator_chance_outside_0_to_1_is_a_one_line_error(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["locator", "default", "data", "--out", "o", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert option in err[-1] and "Traceback" not in "\n".join(err)
    assert build_parser().parse_args(["locator", "default", "d", "--out", "o", option, "0.3"])


def test_a_real_share_fills_each_batch_with_that_share_of_recordings() -> None:
    from collap_model.training.train import draw_songs

    recorded = np.array([False] * 30 + [True] * 10)
    songs = list(range(40))
    alike = draw_songs(songs, recorded, 8, np.random.default_rng(0))
    assert alike == [int(s) for s in np.random.default_rng(0).choice(songs, 8, replace=False)]
    for seed in range(5):
        batch = draw_songs(songs, recorded, 8, np.random.default_rng(seed), real_share=0.5)
        assert len(set(batch)) == 8 and sum(recorded[batch]) == 4
    # more asked of the recordings than there are: the rest comes from the other songs
    batch = draw_songs(songs, recorded, 16, np.random.default_rng(0), real_share=0.9)
    assert sum(recorded[batch]) == 10 and len(set(batch)) == 16
    assert sum(recorded[draw_songs(songs[:5], recorded, 8, np.random.default_rng(0), 1.0)]) == 0


def test_word_dropout_hides_tokens_from_the_token_path_and_keeps_the_pooled_state() -> None:
    from collap_model.text_encoder import TextStates
    from collap_model.training.train import drop_words

    torch.manual_seed(0)
    tokens = [torch.randn(n, 8) for n in (40, 1, 3)]
    pooled = [t.mean(dim=0) for t in tokens]
    states = TextStates(tokens, pooled)
    kept = drop_words(states, 0.5, np.random.default_rng(0))
    assert kept.pooled is states.pooled
    assert 8 < kept.tokens[0].shape[0] < 32  # about half of 40
    for t, k in zip(tokens, kept.tokens, strict=True):  # the kept rows, in order
        rows = [i for i in range(t.shape[0]) if any(torch.equal(t[i], r) for r in k)]
        assert torch.equal(t[rows], k)
    # every token drawn to go: a text keeps its first
    none = drop_words(states, 1.0, np.random.default_rng(0))
    assert all(torch.equal(k, t[:1]) for t, k in zip(tokens, none.tokens, strict=True))
    whole = drop_words(states, 0.0, np.random.default_rng(1))
    assert all(torch.equal(k, t) for t, k in zip(tokens, whole.tokens, strict=True))
    again = drop_words(states, 0.5, np.random.default_rng(0))
    assert all(torch.equal(a, b) for a, b in zip(kept.tokens, again.tokens, strict=True))


def test_train_reads_word_dropout_and_refuses_a_chance_outside_0_to_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = build_parser().parse_args(["train", "D", "--out", "R", "--word-dropout", "0.4"])
    assert recipe_of(args) == Recipe(word_dropout=0.4)
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", "D", "--out", "R", "--word-dropout", "1.5"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--word-dropout" in err[-1]


@needs_fluidsynth
def test_word_dropout_reaches_the_training_steps(dataset: Path, tmp_path: Path) -> None:
    def trained(word_dropout: float, out: str) -> dict[str, torch.Tensor]:
        recipe = Recipe(
            preset="collap-tagger", steps=2, batch=4, eval_every=2, val_songs=1, device="cpu",
            compact_from="collap-mini", word_dropout=word_dropout,
        )  # fmt: skip
        train(dataset / "manifest.jsonl", tmp_path / out, recipe)
        return load_model(tmp_path / out, device="cpu").state_dict()

    plain, dropped = trained(0.0, "plain"), trained(0.9, "dropped")
    token_path = [k for k in plain if k.startswith("text_encoder.") and "backbone" not in k]
    assert token_path and any(not torch.equal(plain[k], dropped[k]) for k in token_path)
