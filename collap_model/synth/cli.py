"""`collap synth`: generate a synthetic music corpus with temporal captions.

Only argparse is imported here; the generator loads when the command runs, so registering
the subcommand keeps `collap --help` fast (and free of torch, which synth never needs).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    """Register `synth` on a subparsers object; its `func` runs the generator."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "synth",
        help="generate synthetic songs (FluidSynth) with timestamped captions and queries",
        description=(
            "Generate a folder of structured songs (FLAC, 16 kHz mono) with manifest.jsonl: "
            "per song a long caption narrating its sections with m:ss timestamps, short "
            "queries, and the true sections. Deterministic from --seed."
        ),
    )
    parser.add_argument("out", help="output folder (created if missing)")
    parser.add_argument("--songs", type=_positive_int, default=100, help="songs (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="song i uses seed SEED+i (default 0)")
    parser.add_argument(
        "--soundfont",
        action="append",
        default=None,
        help="General MIDI .sf2/.sf3, or timgm6mb, fluidr3, musescore (Debian's); repeat it and "
        "each song draws one (default: FluidR3_GM if installed, else TimGM6mb)",
    )
    parser.add_argument(
        "--produce",
        action="store_true",
        help="give each song its own production: reverb, chorus, EQ, compression, stereo "
        "width, noise floor and master level, drawn from its seed",
    )
    parser.add_argument(
        "--phrasings",
        action="append",
        choices=("train", "train-alt", "heldout"),
        default=None,
        help="caption wording: train, train-alt (a second training book), or the held-out set "
        "kept for evaluation; repeat it to give each song one drawn from its seed (default train)",
    )
    parser.add_argument(
        "--queries", type=_positive_int, default=5, help="short queries per song (default 5)"
    )
    parser.add_argument("--min-seconds", type=float, default=30.0, help="shortest song (30)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="longest song (300)")
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="FluidSynth processes at once (default: CPUs available)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Handler of `collap synth`; errors propagate as ValueError/OSError for main to print."""
    from collap_model.synth.dataset import generate_dataset

    report = generate_dataset(
        args.out,
        args.songs,
        args.seed,
        soundfont=args.soundfont
        if args.soundfont is None or len(args.soundfont) > 1
        else args.soundfont[0],
        produce=args.produce,
        phrasings=args.phrasings or ["train"],
        queries=args.queries,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        jobs=args.jobs,
    )
    sys.stdout.write(
        f"wrote {report.songs} songs ({report.audio_seconds / 60:.1f} min of audio) and "
        f"{report.manifest} in {report.wall_seconds:.1f} s "
        f"({report.speed:.0f} s of audio per second)\n"
    )
    return 0
