"""Retrieval quality of the shipped default model on a held-out synthetic set (issue 3).

The held-out set: 300 songs (30 s to 5 min) from `collap synth` with a seed range disjoint
from training and the held-out phrasings, rendered with TimGM6mb. It is generated once into
benchmarks/.cache (or taken from $COLLAP_EVAL_DATA) and evaluated with `collap eval default`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

SONGS = 300
SEED = 1_000_000
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
CACHE = Path(__file__).resolve().parent / ".cache"


def synth_set(env: str, name: str, **synth: Any) -> Path:
    """The folder $env names, else `collap synth` output generated once into CACHE/name."""
    given = os.environ.get(env)
    if given:
        return Path(given)
    out = CACHE / name
    if not (out / "manifest.jsonl").exists():
        from collap_model.synth.dataset import generate_dataset

        generate_dataset(out, soundfont=SOUNDFONT, **synth)
    return out


def dataset() -> Path:
    return synth_set(
        "COLLAP_EVAL_DATA", "eval-heldout", songs=SONGS, seed=SEED, phrasings="heldout"
    )


def table(result: dict[str, Any]) -> str:
    rows = []
    for scorer in ("fusion", "mean_pool", "random"):
        for kind in ("queries", "captions"):
            for direction in ("text_to_audio", "audio_to_text"):
                m = result[scorer][kind][direction]
                rows.append(
                    f"| {scorer} | {kind} | {direction} | {m['R@1']:.3f} | {m['R@5']:.3f} | "
                    f"{m['R@10']:.3f} | {m['MedR']:.0f} | {m['mAP']:.3f} |"
                )
    head = "| scorer | texts | direction | R@1 | R@5 | R@10 | MedR | mAP |\n"
    head += "|---|---|---|---|---|---|---|---|\n"
    return head + "\n".join(rows)


def run() -> str:
    from collap_model.checkpoint import load_model
    from collap_model.training.evaluate import evaluate

    data = dataset()
    model = load_model(device="auto")
    result = evaluate(model, data / "manifest.jsonl", data / ".collap-cache")
    q = result["fusion"]["queries"]["text_to_audio"]
    mp = result["mean_pool"]["queries"]["text_to_audio"]
    loc = result.get("localisation", {})
    bars = (
        f"R@10 {q['R@10']:.3f} (bar >= 0.8), R@1 {q['R@1']:.3f} (bar >= 0.4), "
        f"fusion - mean-pool R@1 {q['R@1'] - mp['R@1']:+.3f} (bar >= +0.05)"
    )
    return f"""## Retrieval quality of the default model (issue 3)

`python -m benchmarks.run retrieval` (`collap eval default DATA`): {result["songs"]} held-out
songs (seed {SEED}+, held-out phrasings), model `{result["fingerprint"]}`, trained:
{model.trained}. Short held-out queries, text->audio: {bars}.

{table(result)}

Localisation: the clip with the highest fusion weight lies within one clip of the time a
caption sentence states for {loc.get("fusion", 0):.3f} of {loc.get("sentences", 0)} sentences
(uniform choice: {loc.get("uniform_chance", 0):.3f}).
"""
