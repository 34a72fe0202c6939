"""End-to-end embedded indexing throughput beside decode-only throughput, same files, same run.

Catalog: mp3, flac and m4a files at 44.1 kHz stereo (generated). Decode-only is PyAV decode +
resample to the model's rate, one process, nothing else. End-to-end is `indexer index` on a
fresh data directory (decoder pool, batched model, Qdrant Edge writes) with the model already
loaded; then a second run over the unchanged catalog.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from collap_model import load_model
from indexer import service
from indexer.decode import AudioDecoder
from indexer.pipeline import ModelHandle
from indexer.settings import Settings
from tests.indexer.fixtures import write_audio

FILES = 24
SECONDS = 60.0


def make_catalog(root: Path) -> list[Path]:
    exts = ("mp3", "flac", "m4a")
    return [write_audio(root / f"{i:02d}.{exts[i % 3]}", SECONDS, seed=i) for i in range(FILES)]


def decode_only(files: list[Path], rate: int) -> float:
    start = time.perf_counter()
    for f in files:
        with AudioDecoder(str(f), rate) as dec:
            for _ in dec.chunks():
                pass
    return time.perf_counter() - start


def run() -> str:
    model = load_model(device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "catalog"
        files = make_catalog(root)
        audio = FILES * SECONDS
        decode_s = decode_only(files, model.sample_rate)
        settings = Settings(data_dir=Path(tmp) / "data", _env_file=None)  # type: ignore[call-arg]
        handle = ModelHandle(settings, model=model)
        first = service.index(settings, [root], model=handle)
        start = time.perf_counter()
        second = service.index(settings, [root], model=ModelHandle(settings, model=model))
        second_s = time.perf_counter() - start
    assert first.indexed == FILES and second.unchanged == FILES
    decode_rate = audio / decode_s
    e2e_rate = audio / first.seconds
    ratio = e2e_rate / decode_rate
    verdict = "meets" if ratio >= 0.5 else "misses"
    return f"""## Embedded indexing throughput (issue 4)

`python -m benchmarks.run indexing`: {FILES} files x {SECONDS:.0f} s (mp3, flac, m4a; 44.1 kHz
stereo), default model on CPU, {settings.decode_workers} decoder process(es), Qdrant Edge store.

| path | audio s / wall s |
|---|---|
| decode-only (PyAV decode + resample to 16 kHz, one process) | {decode_rate:.0f} |
| end-to-end `indexer index` (decode pool + model + store) | {e2e_rate:.0f} |
| **ratio end-to-end / decode-only** | **{ratio:.2f}** (target >= 0.5: {verdict}) |

Second run over the unchanged catalog: {second_s:.2f} s ({second_s / first.seconds:.1%} of the
first run's {first.seconds:.1f} s), nothing decoded.
"""
