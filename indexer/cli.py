"""`indexer`: the command line. Thin: parse, build settings, call indexer.service, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any


def _settings() -> Any:
    from indexer.settings import Settings

    return Settings()


def _cmd_index(args: argparse.Namespace) -> int:
    from indexer import service
    from indexer.progress import TerminalProgress

    settings = _settings()
    progress = TerminalProgress() if sys.stderr.isatty() and not args.json else None

    def waiting(owner: dict[str, Any] | None) -> None:
        from indexer.lock import busy_message

        sys.stderr.write(f"waiting: {busy_message(settings.data_dir, owner)}\n")

    summary = service.index(settings, args.paths, progress=progress, on_wait=waiting)
    if args.json:
        sys.stdout.write(json.dumps(summary.as_dict()) + "\n")
    else:
        s = summary
        sys.stdout.write(
            f"indexed {s.indexed}, unchanged {s.unchanged}, failed {s.failed} "
            f"(+{s.skipped_failed} earlier), removed {s.removed}; "
            f"{s.audio_seconds / 60:.1f} min of audio in {s.seconds:.1f} s\n"
        )
        if s.failed:
            sys.stdout.write("see `indexer failures` for the reasons\n")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from indexer import service

    info = service.status(_settings())
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
        return 0
    if info["live"]:
        p = info.get("progress") or {}
        sys.stdout.write(f"{info['owner']}\n")
        if p:
            sys.stdout.write(
                f"progress: {p.get('files_done', 0)}/{p.get('files_total', 0)} files embedded\n"
            )
        sys.stdout.write(f"failures: {info['failures']}\nstore: {info['store']}\n")
        return 0
    for key in ("tracks", "clips", "failures", "fingerprint", "store"):
        sys.stdout.write(f"{key:<12} {info[key]}\n")
    return 0


def _cmd_failures(args: argparse.Namespace) -> int:
    from indexer import service

    failures = service.list_failures(_settings())
    if args.json:
        sys.stdout.write(json.dumps([f.as_dict() for f in failures]) + "\n")
        return 0
    for f in failures:
        sys.stdout.write(f"{f.path}\n    {f.reason}\n")
    if not failures:
        sys.stdout.write("no failures\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="indexer",
        description="Index music catalogs with CoLLAP embeddings; search by what the music does.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("index", help="index catalog folders (incremental; safe to interrupt)")
    p.add_argument("paths", nargs="+", help="folders or files")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_cmd_index)
    p = sub.add_parser("status", help="tracks, clips, failures, model fingerprint, store location")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_status)
    p = sub.add_parser("failures", help="files that could not be indexed, with the reason")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_failures)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    from pydantic import ValidationError

    try:
        code: int = args.func(args)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        sys.stderr.write(f"indexer: error: bad setting INDEXER_{where.upper()}: {first['msg']}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("indexer: interrupted; run again to continue where it stopped\n")
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        sys.stderr.write(f"indexer: error: {err}\n")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
