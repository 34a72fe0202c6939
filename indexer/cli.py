"""`indexer`: the command line. Thin: parse, build settings, call indexer.service, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from indexer.printable import printable


def _settings() -> Any:
    from indexer.settings import Settings

    return Settings()


def _cmd_index(args: argparse.Namespace) -> int:
    from indexer import service
    from indexer.scan import resolve_roots
    from indexer.terminal import TerminalProgress

    settings = _settings()
    resolve_roots(args.paths)  # a missing or empty path fails before the store is opened
    progress = TerminalProgress() if sys.stderr.isatty() and not args.json else None

    def waiting(owner: dict[str, Any] | None) -> None:
        from indexer.lock import busy_message

        sys.stderr.write(f"waiting: {printable(busy_message(settings.data_dir, owner))}\n")

    def handed_off(owner: dict[str, Any]) -> None:
        from indexer.lock import busy_message

        who = busy_message(settings.data_dir, owner)
        sys.stderr.write(
            f"handed over: {printable(who)} indexes in the background and keeps answering; "
            "this command follows the job (Ctrl-C stops following, not the job)\n"
        )

    from indexer.background import StillRunning

    try:
        summary = service.index(
            settings, args.paths, progress=progress, on_wait=waiting, on_handoff=handed_off
        )
    except StillRunning as err:
        sys.stderr.write(f"indexer: {printable(str(err))}\n")
        return 130
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


def _print_status(info: dict[str, Any]) -> None:
    if info["live"]:
        p = info.get("progress") or {}
        sys.stdout.write(f"{printable(info['owner'])}\n")
        if p.get("state"):
            # every file is embedded and written; the run indexes the collection before it ends
            finishing = ", optimizing the collection" if p.get("state") == "optimizing" else ""
            # a job `indexer serve` runs in the background names its folders and who asked
            job = f" (job of {p['source']}: {', '.join(p['paths'])})" if p.get("job") else ""
            sys.stdout.write(
                printable(
                    f"progress: {p.get('files_done', 0)}/{p.get('files_total', 0)} files "
                    f"embedded{finishing}{job}"
                )
                + "\n"
            )
        sys.stdout.write(f"failures: {info['failures']}\nstore: {printable(info['store'])}\n")
        return
    for key in ("tracks", "clips", "failures", "fingerprint", "store"):
        sys.stdout.write(f"{key:<12} {printable(str(info[key]))}\n")


def _cmd_status(args: argparse.Namespace) -> int:
    from indexer import service
    from indexer.distributed import broker_status

    settings = _settings()
    info = service.status(settings)
    # the queues, when a broker answers (distributed indexing); embedded runs need none
    info["broker"] = broker_status(settings)
    if args.json:
        sys.stdout.write(json.dumps(info) + "\n")
        return 0
    _print_status(info)
    b = info["broker"]
    if b["reachable"]:
        depths = ", ".join(f"{q} {n}" for q, n in b["queues"].items())
        sys.stdout.write(
            f"{'queues':<12} {depths}\n{'in flight':<12} {b['in_flight']} tasks, "
            f"{b['files_queued']} files queued for embedding\n"
            f"{'done':<12} {b['done']} files indexed, {b['failed']} failed, "
            f"{b['removed']} removed (by workers)\n"
        )
    return 0


def _cmd_failures(args: argparse.Namespace) -> int:
    from indexer import service

    failures = service.list_failures(_settings())
    if args.json:
        sys.stdout.write(json.dumps([f.as_dict() for f in failures]) + "\n")
        return 0
    for f in failures:
        sys.stdout.write(f"{printable(f.path)}\n    {printable(f.reason)}\n")
    if not failures:
        sys.stdout.write("no failures\n")
    return 0


def _waiting(settings: Any) -> Any:
    def say(owner: dict[str, Any] | None) -> None:
        from indexer.lock import busy_message

        sys.stderr.write(f"waiting: {printable(busy_message(settings.data_dir, owner))}\n")

    return say


def _cmd_query(args: argparse.Namespace) -> int:

    from indexer import service
    from indexer.search import QueryError, parse_filters

    settings = _settings()
    _check_limit(args.limit, settings)
    where = parse_filters(args.filter)  # a bad filter fails before the model loads
    if not args.text.strip():
        raise QueryError("the query is empty")
    hits = service.find(
        settings,
        lambda s: s.search(args.text, args.limit, where),
        lambda api: api.search(args.text, args.limit, where),
        on_wait=_waiting(settings),
    )
    _print_hits(hits, args.json)
    return 0


def _cmd_similar(args: argparse.Namespace) -> int:
    import uuid
    from pathlib import Path

    from indexer import service
    from indexer.scan import content_hash
    from indexer.search import QueryError, TrackNotFound
    from indexer.store.base import point_id

    settings = _settings()
    _check_limit(args.limit, settings)
    target = args.track
    try:
        track_id: str | None = str(uuid.UUID(target))
    except ValueError:
        track_id = None
        if not Path(target).is_file():
            raise QueryError(f"{target!r} is neither a track id nor an audio file") from None

    def here(s: Any) -> Any:
        if track_id is None:
            return s.similar_to_file(target, args.limit)
        return s.similar(track_id, args.limit)

    def through_owner(api: Any) -> Any:
        # the serving owner takes ids only: a file is named by its content, and one that is not
        # indexed cannot be embedded here (the owner holds the store) nor there (the API never
        # reads a path it is given)
        if track_id is not None:
            return api.similar(track_id, args.limit)
        try:
            return api.similar(point_id(content_hash(target)), args.limit)
        except TrackNotFound:
            raise QueryError(
                f"{target} is not indexed, and `indexer serve` at {api.url} owns the store: "
                "while it runs, only indexed tracks (an id, or an indexed file) can be compared; "
                "index the file first, or stop the server to embed it on the fly"
            ) from None

    hits = service.find(settings, here, through_owner, on_wait=_waiting(settings))
    _print_hits(hits, args.json)
    return 0


def _cmd_recommend(args: argparse.Namespace) -> int:

    from indexer import service
    from indexer.search import MAX_SEEDS, Page, QueryError, parse_filters, track_ids

    settings = _settings()
    _check_limit(args.limit, settings)
    where = parse_filters(args.filter)
    # ids and counts are checked before the model loads
    liked, disliked = track_ids(args.ids), track_ids(args.negative)
    for flag, ids in (("IDs", liked), ("--not", disliked)):
        if len(ids) > MAX_SEEDS:
            raise QueryError(f"{flag}: {len(ids)} tracks; at most {MAX_SEEDS}")
    if args.query is not None and not args.query.strip():
        raise QueryError("--query is empty")
    hits = service.find(
        settings,
        lambda s: s.recommend(liked, disliked, args.query, where, Page(args.limit)),
        lambda api: api.recommend(liked, disliked, args.query, args.limit, filters=where),
        on_wait=_waiting(settings),
    )
    _print_hits(hits, args.json)
    return 0


def _cmd_locate(args: argparse.Namespace) -> int:
    import uuid
    from pathlib import Path

    from indexer import service
    from indexer.scan import content_hash
    from indexer.search import QueryError, TrackNotFound
    from indexer.store.base import point_id

    settings = _settings()
    text, target = args.text, args.track
    if not text.strip():
        raise QueryError("the query is empty")
    try:
        track_id = str(uuid.UUID(target))
        by_path = False
    except ValueError:
        if not Path(target).is_file():
            raise QueryError(f"{target!r} is neither a track id nor an indexed file") from None
        track_id, by_path = point_id(content_hash(target)), True

    try:
        located = service.ask(
            settings,
            lambda s: s.locate(track_id, text),
            lambda api: api.locate(track_id, text),
            on_wait=_waiting(settings),
        ).as_dict()
    except TrackNotFound:
        if not by_path:
            raise
        raise QueryError(
            f"{target} is not indexed (no track holds its content): run `indexer index` on it"
        ) from None
    if args.json:
        sys.stdout.write(json.dumps(located) + "\n")
    else:
        from indexer.terminal import print_located

        print_located(located)
    return 0


def _check_limit(limit: int, settings: Any) -> None:
    """--limit within what the API allows (INDEXER_MAX_LIMIT), before anything loads."""
    from indexer.search import QueryError

    if not 1 <= limit <= settings.max_limit:
        shown = str(limit) if len(str(limit)) <= 12 else f"{str(limit)[:12]}..."
        raise QueryError(
            f"--limit must be 1..{settings.max_limit} (INDEXER_MAX_LIMIT), got {shown}"
        )


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in low..high (a huge one would overflow deep inside)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}")
        return value

    return parse


def _print_hits(hits: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(hits) + "\n")
        return
    from indexer.terminal import print_hits

    print_hits(hits)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from indexer.api.app import check_bind, create_app

    settings = _settings()
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = settings.model_copy(update=updates)
    check_bind(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info" if args.verbose else "warning",
    )
    return 0


def _broker_error(settings: Any, err: Exception) -> int:
    sys.stderr.write(
        printable(f"indexer: error: cannot reach the broker at {settings.broker_url}: {err}") + "\n"
    )
    return 2


def _cmd_queue(args: argparse.Namespace) -> int:
    import redis
    from kombu.exceptions import OperationalError

    from indexer import distributed
    from indexer.scan import resolve_roots
    from workers.app import configure

    settings = _settings()
    configure(settings)
    from workers import tasks

    roots = [str(r) for r in resolve_roots(args.paths)]
    try:
        distributed.register_catalogs(settings, roots)
        for root in roots:
            result = tasks.scan.apply_async(args=[root], retry=True)
            sys.stdout.write(f"queued scan of {printable(root)} (task {result.id})\n")
    except (redis.RedisError, OperationalError) as err:
        return _broker_error(settings, err)
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from indexer.distributed import QUEUES, STORE
    from workers.app import configure

    settings = _settings()
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        got = printable(args.queues)
        sys.stderr.write(f"indexer: error: queues are {', '.join(QUEUES)}; got {got}\n")
        return 2
    concurrency = args.concurrency
    if settings.embedded and STORE in queues:
        # one process owns an embedded shard: the store stage cannot run in several
        if concurrency not in (None, 1):
            sys.stderr.write(
                "indexer: error: the embedded store is owned by one process: run the store "
                "queue with --concurrency 1 (or use a Qdrant server, INDEXER_QDRANT_URL)\n"
            )
            return 2
        concurrency = 1
    argv = ["worker", "--queues", ",".join(queues), "--loglevel", "INFO"]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    configure(settings).worker_main(argv)
    return 0


def _cmd_beat(args: argparse.Namespace) -> int:
    from workers.app import configure

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = configure(settings)
    app.Beat(loglevel="INFO", schedule=str(settings.data_dir / "beat-schedule")).run()
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    import redis
    from kombu.exceptions import OperationalError

    from indexer import distributed, service
    from workers.app import configure

    settings = _settings()

    def say(line: str) -> None:
        sys.stdout.write(printable(line) + "\n")
        sys.stdout.flush()

    # while `indexer serve` owns the embedded store, it indexes what changes (no broker)
    if service.watch_through_owner(settings, args.paths, say):
        return 0
    configure(settings)
    from workers import tasks

    def send_plan(request: dict[str, Any]) -> None:
        tasks.plan.apply_async(args=[request], retry=True)
        n, gone = len(request["files"]), len(request["roots"]) - len(request["files"])
        sys.stdout.write(f"queued {n} new or changed file(s), {gone} deletion(s)\n")
        sys.stdout.flush()

    def send_scan(roots: list[str]) -> None:
        distributed.register_catalogs(settings, roots)
        for root in roots:
            tasks.scan.apply_async(args=[root], retry=True)
        sys.stdout.write(f"watching {printable(', '.join(roots))} (queued a full scan first)\n")
        sys.stdout.flush()

    try:
        distributed.watch(settings, args.paths, send_plan, send_scan)
    except (redis.RedisError, OperationalError) as err:
        return _broker_error(settings, err)
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
    p = sub.add_parser("query", help="search the index with free text")
    p.add_argument("text", help='e.g. "slow intro building to a chorus"')
    p.add_argument(
        "--limit", type=int, default=10, help="hits to show (default 10; at most INDEXER_MAX_LIMIT)"
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="artist=, album=, genre= (exact tag), year=1999 or 1990..1999, "
        "duration=MIN..MAX (seconds or m:ss), path=FOLDER, tag=FACET (what a tagged model "
        "hears, e.g. tag=piano; every tag given must match); repeatable",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    p.set_defaults(func=_cmd_query)
    p = sub.add_parser("similar", help="tracks like an indexed track (id) or an audio file")
    p.add_argument("track", help="a track id, or the path of an audio file")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_similar)
    p = sub.add_parser(
        "recommend", help="tracks like some indexed tracks (ids) and unlike others (--not)"
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="liked track ids (at most 50)")
    p.add_argument(
        "--not",
        dest="negative",
        nargs="+",
        action="extend",
        default=[],
        metavar="ID",
        help="disliked track ids (at most 50)",
    )
    p.add_argument("--query", metavar="TEXT", help='text that steers, e.g. "calmer, no drums"')
    p.add_argument("--limit", type=int, default=10)
    p.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE", help="as for query"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_recommend)
    p = sub.add_parser("locate", help="where a text happens in one track: clips and best parts")
    p.add_argument("track", help="a track id, or the path of an indexed file")
    p.add_argument("text", help='e.g. "where does the saxophone solo start?"')
    p.add_argument("--json", action="store_true", help="print the timeline and segments as JSON")
    p.set_defaults(func=_cmd_locate)
    p = sub.add_parser(
        "serve", help="the HTTP API (search, similar, recommend, locate, tracks, health, metrics)"
    )
    p.add_argument("--host", help="bind address (default INDEXER_HOST, 127.0.0.1)")
    p.add_argument("--port", type=_bounded(0, 65535), help="port (default INDEXER_PORT, 8000)")
    p.set_defaults(func=_cmd_serve)
    p = sub.add_parser("queue", help="queue catalog scans for the workers (and register them)")
    p.add_argument("paths", nargs="+", help="catalog folders")
    p.set_defaults(func=_cmd_queue)
    p = sub.add_parser("worker", help="start a Celery worker for some stages (queues)")
    p.add_argument("--queues", default="scan,embed,store", help="comma-separated: scan,embed,store")
    p.add_argument("--concurrency", type=_bounded(1, 1024), default=None, help="worker processes")
    p.set_defaults(func=_cmd_worker)
    p = sub.add_parser("beat", help="rescan the registered catalogs on the settings' schedule")
    p.set_defaults(func=_cmd_beat)
    p = sub.add_parser("watch", help="queue files as they appear, change or go in some folders")
    p.add_argument("paths", nargs="+", help="catalog folders")
    p.set_defaults(func=_cmd_watch)
    return parser


class _PrintableFormatter(logging.Formatter):
    """Log lines name files: their control characters are escaped like everything printed
    (line breaks kept: a logged traceback stays readable)."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(printable(line) for line in super().format(record).split("\n"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    from pydantic import ValidationError

    try:
        code: int = args.func(args)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        sys.stderr.write(
            printable(f"indexer: error: bad setting INDEXER_{where.upper()}: {first['msg']}") + "\n"
        )
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("indexer: interrupted; run again to continue where it stopped\n")
        return 130
    except (ValueError, OSError, RuntimeError) as err:
        sys.stderr.write(f"indexer: error: {printable(str(err))}\n")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
