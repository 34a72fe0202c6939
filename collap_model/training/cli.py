"""`collap train` and `collap eval` (heavy imports stay inside the handlers)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def recipe_of(args: argparse.Namespace) -> Any:
    """The Recipe that `collap train` options describe (no options: the default recipe)."""
    from collap_model.training.train import Recipe

    return Recipe(
        preset=args.preset, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed,
        device=args.device, eval_every=args.eval_every, val_songs=args.val_songs,
        clip_stride=args.clip_stride, warmup=args.warmup,
        attribute_weight=args.attribute_weight, augment=not args.no_augment,
        compact_from=args.compact_from, real_share=args.real_share,
        word_dropout=args.word_dropout,
    )  # fmt: skip


def _train(args: argparse.Namespace) -> int:
    from collap_model.training.train import train

    report = train(
        [_manifest(d) for d in args.data], Path(args.out), recipe_of(args),
        stop_after=args.stop_after,
    )  # fmt: skip
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


def _locator(args: argparse.Namespace) -> int:
    from collap_model.training.locator import LocatorRecipe, train_locator

    recipe = LocatorRecipe(
        layers=args.layers, steps=args.steps, batch=args.batch, lr=args.lr, warmup=args.warmup,
        neighbour=args.neighbour, word_dropout=args.word_dropout, word_swap=args.word_swap,
        sentence=args.sentence, name_swap=args.name_swap, val_songs=args.val_songs,
        eval_every=args.eval_every, seed=args.seed, device=args.device,
    )  # fmt: skip
    report = train_locator(
        args.checkpoint, [_manifest(d) for d in args.data], Path(args.out), recipe,
        stop_after=args.stop_after,
    )  # fmt: skip
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from collap_model.checkpoint import load_model
    from collap_model.training.evaluate import evaluate

    model = load_model(
        None if args.checkpoint == "default" else args.checkpoint, device=args.device
    )
    cache = Path(args.cache) if args.cache else _manifest(args.data).parent / ".collap-cache"
    result = evaluate(model, _manifest(args.data), cache, seed=args.seed)
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return 0
    if "clips" in result:  # clips with the texts written for them
        sys.stdout.write(
            f"{result['texts']} texts, {result['clips']} clips, model {result['fingerprint']}; "
            "text->audio, a hit is any clip of the text\n"
            f"{'scorer':<11} R@1    R@5    R@10   MedR   mAP\n"
        )
        for scorer in ("fusion", "tag_bridge", "random"):
            if scorer in result:
                m = result[scorer]
                sys.stdout.write(
                    f"{scorer:<11} {m['R@1']:.3f}  {m['R@5']:.3f}  {m['R@10']:.3f}  "
                    f"{m['MedR']:<6.1f} {m['mAP']:.3f}\n"
                )
        r1, r10, ap = (result["fusion_interval"][k] for k in ("R@1", "R@10", "mAP"))
        sys.stdout.write(
            f"fusion on another {result['texts']} texts of this kind (95%, texts resampled): "
            f"R@1 {r1[0]:.3f}-{r1[1]:.3f}, R@10 {r10[0]:.3f}-{r10[1]:.3f}, "
            f"mAP {ap[0]:.3f}-{ap[1]:.3f}\n"
        )
        return 0
    sys.stdout.write(f"{result['songs']} songs, model {result['fingerprint']}\n")
    sys.stdout.write(
        f"{'scorer':<10} {'texts':<9} {'direction':<14} R@1    R@5    R@10   MedR   mAP\n"
    )
    for scorer in ("fusion", "mean_pool", "random"):
        for kind in ("queries", "captions"):
            for direction in ("text_to_audio", "audio_to_text"):
                m = result[scorer].get(kind, {}).get(direction)
                if m:
                    sys.stdout.write(
                        f"{scorer:<10} {kind:<9} {direction:<14} {m['R@1']:.3f}  {m['R@5']:.3f}  "
                        f"{m['R@10']:.3f}  {m['MedR']:<6.1f} {m['mAP']:.3f}\n"
                    )
    located = result.get("localisation", {})
    if located:
        sys.stdout.write(
            "localisation: the chosen clip within one clip of the stated time\n"
            f"{'texts':<16} {'n':>5}  locate  fusion weight  most similar clip  uniform\n"
        )
        for kind, label in (("sentences", "timed sentences"), ("queries", "timed queries")):
            if kind in located:
                loc = located[kind]
                sys.stdout.write(
                    f"{label:<16} {loc['texts']:>5}  {loc['locate']:.3f}   "
                    f"{loc['fusion_weight']:.3f}          {loc['most_similar_clip']:.3f}"
                    f"              {loc['uniform_chance']:.3f}\n"
                )
    return 0


def _chance(text: str) -> float:
    """A probability from the command line: a one-line error outside 0..1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a chance is between 0 and 1, got {text}")
    return value


def _manifest(data: str) -> Path:
    path = Path(data)
    return path / "manifest.jsonl" if path.is_dir() else path


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on data sets (folders with manifest.jsonl)")
    p.add_argument(
        "data", nargs="+", help="data set folders or manifest.jsonl files (validation: the first)"
    )
    p.add_argument(
        "--out", required=True, help="output folder: checkpoint, caches, resumable state"
    )
    p.add_argument("--preset", default="collap-mini")
    p.add_argument("--steps", type=int, default=2400)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--clip-stride", type=int, default=2, help="train on every k-th clip")
    p.add_argument("--val-songs", type=int, default=50)
    p.add_argument(
        "--attribute-weight",
        type=float,
        default=1.0,
        help="weight of the per-clip attribute loss from the manifest's sections (0: off)",
    )
    p.add_argument(
        "--no-augment", action="store_true", help="no noise floor or gain on the clip features"
    )
    p.add_argument(
        "--compact-from",
        default=None,
        help="a tagged preset keeps this compact model's convolution stages fixed (a preset "
        "name or checkpoint folder, e.g. collap-mini): only the heads train, ~100x faster",
    )
    p.add_argument(
        "--real-share", type=_chance, default=None,
        help="share of each batch drawn from the recordings (default: every song alike)",
    )  # fmt: skip
    p.add_argument(
        "--word-dropout", type=_chance, default=0.0,
        help="chance each token of a training text is hidden from the learned token path",
    )  # fmt: skip
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--stop-after", type=int, default=None, help="run at most N steps now; resume later"
    )
    p.set_defaults(func=_train)
    p = sub.add_parser(
        "locator",
        help="train a checkpoint's locator alone (where a text happens), on timed texts; "
        "scores and index vectors stay as they are",
    )
    p.add_argument("checkpoint", help="checkpoint folder, preset name, or `default`")
    p.add_argument(
        "data", nargs="+", help="data set folders with timed texts (validation: the first's end)"
    )
    p.add_argument("--out", required=True, help="output checkpoint folder (resumable state)")
    p.add_argument(
        "--layers", type=int, default=2, choices=range(5), metavar="{0..4}",
        help="context layers of the locator (0: none)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--neighbour", type=float, default=0.2, help="target mass on each adjacent clip")
    p.add_argument(
        "--word-dropout", type=_chance, default=0.0, help="chance each training word is hidden"
    )
    p.add_argument(
        "--word-swap", type=_chance, default=0.0,
        help="chance each training word reads as a random word of another text",
    )  # fmt: skip
    p.add_argument(
        "--name-swap", type=_chance, default=0.0,
        help="chance a training text's section names read as random words of other texts",
    )  # fmt: skip
    p.add_argument(
        "--sentence", action="store_true",
        help="the locator also reads each text's sentence embedding, where paraphrases lie close",
    )  # fmt: skip
    p.add_argument("--val-songs", type=int, default=40)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--stop-after", type=int, default=None, help="run at most N steps now; resume later"
    )
    p.set_defaults(func=_locator)
    p = sub.add_parser(
        "eval", help="retrieval metrics of a checkpoint on a dataset, beside baselines"
    )
    p.add_argument(
        "checkpoint", help="checkpoint folder, preset name, or `default` (shipped weights)"
    )
    p.add_argument("data", help="dataset folder or manifest.jsonl")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--cache", default=None, help="feature cache folder (default: DATA/.collap-cache)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=_eval)
