"""`collap`: the model's command line (info now; synth, train and eval build on it)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from collap_model.synth import cli as synth_cli
from collap_model.training import cli as training_cli

log = logging.getLogger("collap")


def _cmd_info(args: argparse.Namespace) -> int:
    from collap_model.checkpoint import load_model

    model = load_model(args.model, device=args.device)
    fe = model.config.frontend
    info = {
        "preset": model.config.name,
        "fingerprint": model.fingerprint,
        "trained": model.trained,
        "sample_rate": fe.sample_rate,
        "clip_seconds": fe.clip_seconds,
        "hop_seconds": fe.hop_seconds,
        "embedding_dim": model.config.embed_dim,
        "audio_encoder": model.config.audio.kind.value,
        "text_backbone": model.config.text.backbone,
        "text_pooling": model.config.text.pooling.value,
        "device": str(model.device),
        "parameters": model.parameter_counts(),
    }
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "parameters":
            assert isinstance(value, dict)
            value = ", ".join(f"{k} {v:,}" for k, v in value.items())
        sys.stdout.write(f"{key:<{width}}  {value}\n")
    if not model.trained:
        sys.stdout.write("note: these weights are randomly initialised, not trained\n")
    return 0


def _cmd_convert_musicnn(args: argparse.Namespace) -> int:
    from pathlib import Path

    from collap_model.tagger.convert import convert

    for path in convert(Path(args.source), Path(args.out)):
        sys.stdout.write(f"wrote {path}\n")
    return 0


def _cmd_placement(args: argparse.Namespace) -> int:
    """Rewrite a checkpoint to place its tagger's patches another way; its weights stay."""
    from pathlib import Path

    from collap_model.checkpoint import load_weights, save_checkpoint
    from collap_model.config import ConfigError, ModelConfig, PatchPlacement
    from collap_model.model import CoLLAP
    from collap_model.registry import WEIGHTS_FILE, read_checkpoint_config

    known = [p.value for p in PatchPlacement]
    if args.placement not in known:
        raise ConfigError(f"unknown placement {args.placement!r}; choose {' or '.join(known)}")
    directory = Path(args.checkpoint)
    config, trained, _ = read_checkpoint_config(directory)
    if config.audio.tagger is None:
        raise ConfigError(f"{directory} has no tagger whose patches could be placed")
    data = config.model_dump(mode="json")
    data["audio"]["tagger"]["patch_placement"] = args.placement
    model = CoLLAP(ModelConfig.model_validate(data), trained=trained)
    load_weights(model, directory / WEIGHTS_FILE)
    save_checkpoint(model, directory)
    sys.stdout.write(f"{directory}: tagger patches {args.placement}, {model.fingerprint}\n")
    return 0


def _cmd_recordings(args: argparse.Namespace) -> int:
    from pathlib import Path

    from collap_model.recordings.dataset import build_recordings

    report = build_recordings(
        Path(args.out), args.preset, args.min_seconds, args.queries, args.device, args.package
    )
    sys.stdout.write(
        f"wrote {report.tracks} tracks ({report.audio_seconds / 3600:.1f} h, {report.skipped} "
        f"skipped) and {report.manifest} in {report.wall_seconds / 60:.1f} min\n"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collap", description="The CoLLAP music-text model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser(
        "info", help="describe a model: preset, fingerprint, sizes, trained or not"
    )
    info.add_argument(
        "--model", default=None, help="preset name or checkpoint directory (default: shipped)"
    )
    info.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_cmd_info)
    synth_cli.add_parser(sub)
    training_cli.add_parsers(sub)
    conv = sub.add_parser(
        "convert-musicnn",
        help="convert musicnn's TF checkpoints (the musicnn 0.1.0 wheel) to safetensors",
    )
    conv.add_argument(
        "source", help="musicnn-0.1.0-py3-none-any.whl (pip download --no-deps musicnn==0.1.0)"
    )
    conv.add_argument(
        "--out", default="collap_model/weights/musicnn", help="output folder (default: shipped)"
    )
    conv.set_defaults(func=_cmd_convert_musicnn)
    place = sub.add_parser(
        "placement",
        help="serve a trained checkpoint with its tagger's patches centred in each clip, or "
        "shared by the two clips that overlap around them (half the tagger's work)",
    )
    place.add_argument("checkpoint", help="checkpoint folder (rewritten in place)")
    # checked by the handler: the config module (pydantic) stays out of every command's start
    place.add_argument("placement", metavar="centre|shared")
    place.set_defaults(func=_cmd_placement)
    rec = sub.add_parser(
        "recordings",
        help="a training set of Debian's recorded game music with machine-written captions",
    )
    rec.add_argument("out", help="output folder: manifest.jsonl, extracted files, tag cache")
    rec.add_argument("--preset", default="collap-tagger", help="model whose tagger listens")
    rec.add_argument("--min-seconds", type=float, default=30.0, help="shorter tracks are skipped")
    rec.add_argument("--queries", type=int, default=8, help="short queries per track")
    rec.add_argument("--device", default="auto")
    rec.add_argument(
        "--package", action="append", default=None, help="only these Debian packages (repeat)"
    )
    rec.set_defaults(func=_cmd_recordings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    from collap_model.config import ConfigError

    try:
        code: int = args.func(args)
    except (ConfigError, ValueError, OSError) as err:
        sys.stderr.write(f"collap: error: {err}\n")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
