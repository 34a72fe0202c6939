"""Where the locator's held-out gap lies: the section names (issue 16).

The locator places timed texts worded as in training far better than held-out-worded ones on
the same songs (MODEL_CARD). This benchmark splits that gap. One set of songs is read three
ways, in the same run and by the same model: as the held-out phrasebook words it; the same
texts with each of the held-out book's section names (phrases.HELDOUT.sections: "main hook",
"coda", ...) replaced by the training book's first name for that kind of section ("chorus",
"outro", ...), everything else as written; and the training phrasebook's own texts for the
same songs. Each figure is `collap eval`'s localisation (the best clip within one clip of the
stated time), for caption sentences and timed short queries, and per kind of section the
text names. Beside it, what the text backbone makes of each held-out name: the training name
nearest to it in the backbone's pooled space (the frame "we reach the {}", cosine), which is
all a model with this frozen backbone knows about a word its training never used.

Data: $COLLAP_LOCATOR_DEV_DATA (held-out phrasings) and $COLLAP_LOCATOR_DEV_TRAINWORDS_DATA
(the same seed, training phrasings), else generated into benchmarks/.cache (60 songs of
FluidR3, a training soundfont, seeds 3000000-3000059: the dev set the locator's word dropout
was chosen on, never the evaluation sets). $COLLAP_LOCATOR_MODELS: checkpoints to score
beside the shipped default (comma-separated).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import retrieval

SONGS = 60
SEED = 3_000_000
SOUNDFONT = "fluidr3"
FRAME = "we reach the {}"


def datasets() -> tuple[Path, Path]:
    common: dict[str, Any] = {"songs": SONGS, "seed": SEED, "soundfont": SOUNDFONT}
    heldout = retrieval.synth_set(
        "COLLAP_LOCATOR_DEV_DATA", "locator-dev", phrasings="heldout", **common
    )
    trainwords = retrieval.synth_set(
        "COLLAP_LOCATOR_DEV_TRAINWORDS_DATA", "locator-dev-trainwords", phrasings="train", **common
    )
    return heldout, trainwords


def section_names(book: Any) -> list[tuple[str, Any]]:
    """(name, section kind) of a phrasebook, longest first (so "verse section" goes before a
    name it contains)."""
    pairs = [(name, kind) for kind, names in book.sections.items() for name in names]
    return sorted(pairs, key=lambda p: -len(p[0]))


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.I)


def renamed(text: str, source: Any, target: Any) -> str:
    """`text` with each of `source`'s section names replaced by `target`'s first name for the
    same kind of section."""
    for name, kind in section_names(source):
        text = _pattern(name).sub(target.sections[kind][0], text)
    return text


def named_kind(text: str, book: Any) -> str:
    """The kind of section `text` names in `book`'s words (the first named), or "none"."""
    found = [(m.start(), kind) for name, kind in section_names(book)
             for m in _pattern(name).finditer(text)]  # fmt: skip
    return str(min(found, key=lambda f: f[0])[1].value) if found else "none"


def embedded(model: Any, folder: Path) -> tuple[list[Any], Any]:
    """`folder`'s manifest entries and its songs' clip embeddings (its `collap eval` cache)."""
    from collap_model.synth.dataset import read_manifest
    from collap_model.training.cache import DATA_CACHE, audio_cache
    from collap_model.training.evaluate import embed_songs

    entries = read_manifest(folder / "manifest.jsonl")
    cache = audio_cache(model, [e.audio_path for e in entries], folder / DATA_CACHE, None)
    return entries, embed_songs(model, cache)


def localise(
    model: Any, songs: tuple[list[Any], Any], texts_of: Any, book: Any, work: Path
) -> dict[str, dict[str, tuple[int, float]]]:
    """{"sentences" | "queries": {kind: (texts, share placed)}} for the `embedded` songs,
    each timed text first passed through `texts_of`; kinds as `book` names them ("all": all)."""
    from collap_model.training.cache import text_cache
    from collap_model.training.evaluate import localisation
    from collap_model.training.timing import caption_times, query_times

    entries, batch = songs
    out: dict[str, dict[str, tuple[int, float]]] = {}
    ways = (("sentences", lambda e: caption_times(e.caption)), ("queries", query_times))
    for group, timed in ways:
        items, texts, kinds = [], [], []
        for s, e in enumerate(entries):
            for text, seconds in timed(e):
                items.append((s, "", seconds))
                texts.append(texts_of(text))
                kinds.append(named_kind(text, book))
        cache = text_cache(model, texts, work)
        rows: dict[str, tuple[int, float]] = {}
        for kind in ["all", *sorted(set(kinds))]:
            index = [k for k, c in enumerate(kinds) if kind in ("all", c)]
            found = localisation(model, batch, cache.subset(index), [items[k] for k in index])
            rows[kind] = (len(index), found["locate"])
        out[group] = rows
    return out


def nearest_names(model: Any, source: Any, target: Any) -> list[tuple[str, str, str, float]]:
    """(held-out name, its kind, the nearest training name, cosine) in the backbone's pooled
    space, each name in FRAME."""
    import torch
    import torch.nn.functional as F

    def pooled(names: Sequence[str]) -> Any:
        with torch.inference_mode():
            _, states = model.text_encoder.hidden_states([FRAME.format(n) for n in names])
        return F.normalize(torch.stack(states).float(), dim=-1)

    theirs = section_names(target)
    mine = section_names(source)
    sims = pooled([n for n, _ in mine]) @ pooled([n for n, _ in theirs]).T
    rows = []
    for (name, kind), row in zip(mine, sims, strict=True):
        j = int(row.argmax())
        near = f"{theirs[j][0]} ({theirs[j][1].value})"
        rows.append((name, str(kind.value), near, float(row[j])))
    return sorted(rows, key=lambda r: (r[1], r[0]))


def _table(results: Mapping[str, Mapping[str, Mapping[str, tuple[int, float]]]]) -> list[str]:
    ways = list(results)
    lines = []
    for group in ("sentences", "queries"):
        kinds = list(results[ways[0]][group])
        lines += [
            f"| {group}: section named | " + " | ".join(ways) + " |",
            "|---|" + "---|" * len(ways),
        ]
        for kind in kinds:
            cells = []
            for way in ways:
                n, share = results[way][group].get(kind, (0, float("nan")))
                cells.append(f"{share:.3f} ({n})" if n else "")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def run() -> str:
    from collap_model.checkpoint import load_model
    from collap_model.synth.phrases import HELDOUT, TRAIN

    heldout, trainwords = datasets()
    names = [None, *filter(None, os.environ.get("COLLAP_LOCATOR_MODELS", "").split(","))]
    out = [
        "## Locator vocabulary (where the held-out gap lies)",
        "",
        f"`python -m benchmarks.run vocabulary`: {SONGS} songs (seeds {SEED}-{SEED + SONGS - 1}, "
        f"{SOUNDFONT}), localisation (best clip within one clip of the stated time, as `collap "
        "eval`) of each timed text as the held-out phrasebook words it, the same texts with "
        "only the held-out section names replaced by the training book's, and the training "
        "phrasebook's texts for the same songs; rows by the kind of section the text names "
        "(in the held-out book's words; the training texts by theirs), share placed (texts).",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="collap-vocab-") as tmp:
        for name in names:
            model = load_model(name, device="cpu")
            work = Path(tmp) / model.fingerprint
            held, trained = embedded(model, heldout), embedded(model, trainwords)
            results = {
                "held-out wording": localise(model, held, lambda t: t, HELDOUT, work),
                "held-out, training's section names": localise(
                    model, held, lambda t: renamed(t, HELDOUT, TRAIN), HELDOUT, work
                ),
                "training wording": localise(model, trained, lambda t: t, TRAIN, work),
            }
            out += [f"### {model.fingerprint}" + (" (default)" if name is None else ""), ""]
            out += _table(results)
        out += [
            "What the text backbone makes of each held-out section name: the training name "
            f'nearest to it (cosine of pooled states, each in "{FRAME}"):',
            "",
            "| held-out name | kind | nearest training name | cosine |",
            "|---|---|---|---|",
        ]
        nearest = nearest_names(model, HELDOUT, TRAIN)
        out += [f"| {n} | {k} | {near} | {c:.2f} |" for n, k, near, c in nearest]
    return "\n".join(out) + "\n"
