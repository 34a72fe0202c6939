"""Retrieval quality of the shipped default model, in three rows (issue 15):

1. synthetic held-out: 300 songs (30 s to 5 min) from `collap synth`, seeds disjoint from
   training, the held-out phrasings, rendered with TimGM6mb (a soundfont the recipe trains on);
2. the same songs rendered with MuseScore General (a soundfont the recipe never hears);
3. external-dev: clips other systems made from texts (../shared/external-dev), indexed into an
   embedded store and asked with their texts through the indexer's own search (`indexer query`),
   a hit being any clip made for the text.
Each beside the baselines of the same run: mean-pooled clips and random scores (synthetic), the
training-free tag bridge and random (external), and the previous default `collap-mini`.
The synthetic sets are generated once into benchmarks/.cache (or taken from
$COLLAP_EVAL_DATA and $COLLAP_EVAL_HELDOUT_FONT_DATA); external-dev from
$COLLAP_EXTERNAL_DEV, else ../shared/external-dev beside the repository.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

SONGS = 300
SEED = 1_000_000
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
HELDOUT_FONT = "musescore"
CACHE = Path(__file__).resolve().parent / ".cache"
EXTERNAL = Path(__file__).resolve().parent.parent.parent / "shared" / "external-dev"
PREVIOUS = "collap-mini"


def synth_set(env: str, name: str, **synth: Any) -> Path:
    """The folder $env names, else `collap synth` output generated once into CACHE/name."""
    given = os.environ.get(env)
    if given:
        return Path(given)
    out = CACHE / name
    if not (out / "manifest.jsonl").exists():
        from collap_model.synth.dataset import generate_dataset

        generate_dataset(out, **{"soundfont": SOUNDFONT, **synth})
    return out


def dataset() -> Path:
    return synth_set(
        "COLLAP_EVAL_DATA", "eval-heldout", songs=SONGS, seed=SEED, phrasings="heldout"
    )


def heldout_font_dataset() -> Path:
    return synth_set(
        "COLLAP_EVAL_HELDOUT_FONT_DATA", "eval-heldout-musescore", songs=SONGS, seed=SEED,
        phrasings="heldout", soundfont=HELDOUT_FONT,
    )  # fmt: skip


def external() -> Path | None:
    folder = Path(os.environ.get("COLLAP_EXTERNAL_DEV", EXTERNAL))
    return folder if (folder / "manifest.jsonl").exists() else None


def through_index(model: Any, folder: Path) -> dict[str, float]:
    """Index the clips of `folder`'s manifest into a new embedded store and ask each distinct
    text through `Searcher.search` (what `indexer query` runs): R@1/5/10 and MedR per text."""
    import numpy as np

    from collap_model.synth.dataset import read_manifest
    from indexer import service
    from indexer.pipeline import ModelHandle
    from indexer.search import Searcher
    from indexer.settings import Settings

    entries = read_manifest(folder / "manifest.jsonl")
    with tempfile.TemporaryDirectory(prefix="collap-external-") as tmp:
        settings = Settings(data_dir=Path(tmp), _env_file=None)  # type: ignore[call-arg]
        paths = sorted({e.audio_path.resolve() for e in entries})
        service.index(settings, paths, model=ModelHandle(settings, model=model))
        texts = sorted({e.caption for e in entries})
        relevant = {t: {str(e.audio_path.resolve()) for e in entries if e.caption == t}
                    for t in texts}  # fmt: skip
        firsts = []
        with service.session(settings) as s:
            searcher = Searcher(s.store, model, len(entries), settings.max_query_chars)
            for text in texts:
                hits = searcher.search(text, limit=len(entries))
                ranks = [i + 1 for i, h in enumerate(hits) if h.path in relevant[text]]
                firsts.append(ranks[0] if ranks else len(entries) + 1)
    first = np.array(firsts)
    return {"R@1": float(np.mean(first <= 1)), "R@5": float(np.mean(first <= 5)),
            "R@10": float(np.mean(first <= 10)), "MedR": float(np.median(first))}  # fmt: skip


def _row(label: str, scorer: str, m: dict[str, float]) -> str:
    return (
        f"| {label} | {scorer} | {m['R@1']:.3f} | {m['R@5']:.3f} | {m['R@10']:.3f} | "
        f"{m['MedR']:.0f} |"
    )


def run() -> str:
    from collap_model.checkpoint import load_model
    from collap_model.training.evaluate import evaluate

    model = load_model(device="auto")
    previous = load_model(PREVIOUS, device="auto")
    rows: list[str] = []
    bars: list[str] = []
    loc_line = ""
    songs = 0
    for label, data in (("synthetic held-out, training soundfont (TimGM6mb)", dataset()),
                        ("synthetic held-out, held-out soundfont (MuseScore General)",
                         heldout_font_dataset())):  # fmt: skip
        result = evaluate(model, data / "manifest.jsonl", data / ".collap-cache")
        old = evaluate(previous, data / "manifest.jsonl", data / ".collap-cache")
        songs = result["songs"]
        q = result["fusion"]["queries"]["text_to_audio"]
        mp = result["mean_pool"]["queries"]["text_to_audio"]
        rows.append(_row(label, "fusion", q))
        rows.append(_row(label, "mean-pool", mp))
        rows.append(_row(label, "random", result["random"]["queries"]["text_to_audio"]))
        before = old["fusion"]["queries"]["text_to_audio"]
        rows.append(_row(label, f"previous `{PREVIOUS}`", before))
        if "MuseScore" in label:
            bars.append(
                f"held-out soundfont R@10 {q['R@10']:.3f} (bar >= 0.5), fusion - mean-pool "
                f"R@1 {q['R@1'] - mp['R@1']:+.3f} (bar >= +0.05)"
            )
            loc = result.get("localisation", {}).get("sentences", {})
            loc_line = (
                f"Localisation (held-out soundfont): the clip with the highest fusion weight lies "
                f"within one clip of the time a caption sentence states for "
                f"{loc.get('fusion_weight', 0):.3f} of {loc.get('texts', 0)} sentences (uniform "
                f"choice: {loc.get('uniform_chance', 0):.3f})."
            )
    folder = external()
    if folder is None:
        rows.append("| external-dev | (not found: set COLLAP_EXTERNAL_DEV) | | | | |")
    else:
        label = "external-dev"
        ext = evaluate(model, folder / "manifest.jsonl", CACHE / "external-dev-cache")
        indexed = through_index(model, folder)
        rows.append(_row(label, "fusion, through `indexer query`", indexed))
        rows.append(_row(label, "fusion, `collap eval`", ext["fusion"]))
        rows.append(_row(label, "tag bridge, no training", ext["tag_bridge"]))
        rows.append(_row(label, "random", ext["random"]))
        rows.append(_row(label, f"previous `{PREVIOUS}`, through `indexer query`",
                         through_index(previous, folder)))  # fmt: skip
        bars.append(
            f"external-dev through `indexer query`: R@10 {indexed['R@10']:.3f} (bar >= 0.70), "
            f"R@1 {indexed['R@1']:.3f} (bar >= 0.25)"
        )
    table = "| set | scorer | R@1 | R@5 | R@10 | MedR |\n|---|---|---|---|---|---|\n"
    return f"""## Retrieval quality of the default model (issue 15)

`python -m benchmarks.run retrieval`: model `{model.fingerprint}` (trained: {model.trained}).
Synthetic sets: {songs} songs (seed {SEED}+, held-out phrasings), short queries, text->audio
(`collap eval default DATA`). External-dev: text->clip per distinct text, a hit is any clip made
for it. {"; ".join(bars)}.

{table}{chr(10).join(rows)}

{loc_line}
"""
