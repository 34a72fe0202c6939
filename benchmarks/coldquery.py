"""A cold `indexer query`: a new process, no server running, a small index (issue 18).

A catalog of 24 generated 30 s files is indexed with the shipped default into a data directory
of its own (cached in benchmarks/.cache). Each sample is one process started and waited for:
- `indexer query TEXT --limit 10`, the CLI as a user runs it (the torch-free text side,
  collap_model/light.py);
- the peer: the same search in a new process through the torch model, as `indexer query` ran
  before (service.searcher with light=False: torch, the plain-torch backbone, the whole model);
- for reference, an interpreter that only imports torch, and one that does nothing.
Both searches must return the same hits. Rows with the OS page cache warm (files read before,
as on a machine in use) and, where this process may drop it (root), with the page cache
dropped before each sample (a first query after a long idle).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache" / "coldquery"
FILES = 24
SECONDS = 30.0
WARM_SAMPLES = 12
DROPPED_SAMPLES = 4
TARGET_S = 2.0
TEXTS = (
    "slow intro building to a chorus",
    "solo piano, quiet and sad",
    "fast drums and a loud bass line",
    "strings swell at the end",
)
HEADER = (
    "| page cache | `indexer query` s | torch model s | speed-up | `import torch` alone s "
    "| empty interpreter s | target <= {target:.0f} s (slowest) |\n|---|---|---|---|---|---|---|"
)
TORCH_SEARCH = """
import json, sys
from indexer import service
from indexer.settings import Settings
with service.searcher(Settings(), light=False) as s:
    print(json.dumps({h.id: h.score for h in s.search(sys.argv[1], limit=10)}))
"""


def catalog() -> Path:
    """The data directory of the indexed catalog (built once per model fingerprint)."""
    from collap_model.registry import peek_model
    from indexer import service
    from indexer.settings import Settings
    from tests.indexer.fixtures import write_audio

    _, fingerprint = peek_model(None)
    data = CACHE / f"data-{fingerprint}"
    if (data / "complete").exists():
        return data
    root = CACHE / "catalog"
    for i in range(FILES):
        path = root / f"{i:02d}.flac"
        if not path.exists():
            write_audio(path, SECONDS, seed=100 + i)
    settings = Settings(data_dir=data, _env_file=None)  # type: ignore[call-arg]
    summary = service.index(settings, [root])
    assert summary.indexed == FILES, summary
    (data / "complete").write_text("")
    return data


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def timed(argv: list[str], env: dict[str, str], drop: bool) -> tuple[float, str]:
    if drop:
        drop_page_cache()
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


def run() -> str:
    data = catalog()
    env = {**os.environ, "INDEXER_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    indexer = str(Path(sys.executable).with_name("indexer"))
    paths = {
        "cli": lambda t: [indexer, "query", t, "--limit", "10", "--json"],
        "torch": lambda t: [sys.executable, "-c", TORCH_SEARCH, t],
        "import torch": lambda t: [sys.executable, "-c", "import torch"],
        "nothing": lambda t: [sys.executable, "-c", "pass"],
    }
    shared, top, gap = [], 0, 0.0
    for text in TEXTS:  # also warms the page cache
        _, cli_out = timed(paths["cli"](text), env, False)
        _, torch_out = timed(paths["torch"](text), env, False)
        hits = json.loads(cli_out)
        ours = {h["id"]: h["score"] for h in hits}
        theirs = json.loads(torch_out)
        shared.append(len(set(ours) & set(theirs)))
        top += hits[0]["id"] == max(theirs, key=theirs.__getitem__)
        gap = max([gap, *(abs(ours[i] - theirs[i]) for i in set(ours) & set(theirs))])
    can_drop = drop_page_cache()
    rows = []
    for label, drop, samples in (
        ("page cache warm", False, WARM_SAMPLES),
        ("page cache dropped before each", True, DROPPED_SAMPLES),
    ):
        if drop and not can_drop:
            continue
        times: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(samples):
            for name, argv in paths.items():
                times[name].append(timed(argv(TEXTS[i % len(TEXTS)]), env, drop)[0])
        med = {name: float(np.median(t)) for name, t in times.items()}
        worst = {name: max(t) for name, t in times.items()}
        verdict = "meets" if worst["cli"] <= TARGET_S else "misses"
        rows.append(
            f"| {label} ({samples} each) | {med['cli']:.2f} / {worst['cli']:.2f} | "
            f"{med['torch']:.2f} / {worst['torch']:.2f} | {med['torch'] / med['cli']:.1f}x | "
            f"{med['import torch']:.2f} | {med['nothing']:.2f} | {verdict} |"
        )
    table = "\n".join(rows)
    return f"""## A cold `indexer query` (issue 18; `python -m benchmarks.run coldquery`)

A new process per query, no server running, {FILES} indexed tracks ({SECONDS:.0f} s generated
files, the shipped default model), limit 10: `indexer query` as a user runs it (the torch-free
text side of the model, collap_model/light.py) beside the same search through the torch model
in a new process (how `indexer query` ran before), and two references: an interpreter that
only imports torch, and one that does nothing. Median / slowest wall seconds from start to
exit. Over the {len(TEXTS)} texts the two searches share {min(shared)}-{max(shared)} of their ten
tracks and the first hit for {top} of them, their scores within {gap:.4f} of each other (the
torch model's backbone runs in bfloat16 on a CPU that has it, the NumPy one in float32: the
generated tracks score close together, so near-equal ones may swap at the edge of the ten).

{HEADER.format(target=TARGET_S)}
{table}
"""
