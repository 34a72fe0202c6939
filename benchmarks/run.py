"""Run benchmarks and write their sections into BENCHMARKS.md.

    python -m benchmarks.run            # every benchmark
    python -m benchmarks.run encoder    # just one; the other sections of the file are kept

Each benchmark measures our code beside a peer in the same run and reports the ratio, so the
figures say something on any machine; absolute numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

# name -> module exposing `run() -> str` (a markdown section body)
BENCHMARKS = {
    "encoder": "benchmarks.encoder",
    "indexing": "benchmarks.indexing",
    "retrieval": "benchmarks.retrieval",
    "query": "benchmarks.query",
    "workers": "benchmarks.workers",
    "ceiling": "benchmarks.ceiling",
    "page": "benchmarks.page",
    "tagger": "benchmarks.tagger",
    "recommend": "benchmarks.recommend",
    "cold": "benchmarks.cold",
    "locate": "benchmarks.locate",
    "catalog": "benchmarks.catalog",
    "coldquery": "benchmarks.coldquery",
    "owner": "benchmarks.owner",
    "vocabulary": "benchmarks.vocabulary",
}
OUT = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = """# Benchmarks

Written by `python -m benchmarks.run` (one section per benchmark; `python -m benchmarks.run NAME`
re-runs one and keeps the others). Figures are ratios against a peer measured in the same run;
absolute rates hold for the machine named in each section only.
"""


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, {gpu}, Python {platform.python_version()}"
    )


def merge(existing: str, name: str, body: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"<!-- section: {name} -->\n{body.rstrip()}\n\n"
        f"_Measured {stamp} on {machine()}._\n<!-- end: {name} -->\n"
    )
    pattern = re.compile(
        rf"<!-- section: {re.escape(name)} -->.*?<!-- end: {re.escape(name)} -->\n", re.S
    )
    if not existing.strip():
        existing = HEADER
    if pattern.search(existing):
        return pattern.sub(lambda _: section, existing)
    return existing.rstrip() + "\n\n" + section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "names", nargs="*", choices=[*BENCHMARKS, []], help="benchmarks to run (default: all)"
    )
    args = parser.parse_args(argv)
    text = OUT.read_text() if OUT.exists() else ""
    for name in args.names or list(BENCHMARKS):
        print(f"running {name} ...", file=sys.stderr)
        body = importlib.import_module(BENCHMARKS[name]).run()
        text = merge(text, name, body)
        OUT.write_text(text)
        print(body, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
