"""Settings (pydantic-settings): environment variables prefixed INDEXER_, or a .env file.

Built once in an entry point and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AUDIO_EXTENSIONS = (
    ".mp3", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac", ".alac",
    ".wav", ".wave", ".aif", ".aiff", ".aifc", ".wma", ".wv", ".ape",
)  # fmt: skip


_COLLECTION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/collap-indexer, else ~/.local/share/collap-indexer."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "collap-indexer"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INDEXER_", env_file=".env", extra="ignore")

    # where the embedded store (Qdrant Edge shards), failure log and lock live
    data_dir: Path = Field(default_factory=default_data_dir)
    # a Qdrant server (http://host:6333); unset = the embedded Qdrant Edge store in data_dir
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None  # API key of the Qdrant server
    collection: str = (
        "tracks"  # alias that queries use; collections are named <alias>-<fingerprint>
    )
    model: str | None = None  # preset name or checkpoint directory; unset = shipped default
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    # file extensions that count as audio (comma-separated in the environment)
    extensions: Annotated[tuple[str, ...], NoDecode] = AUDIO_EXTENSIONS
    # decoder processes; decoding is the bottleneck on CPUs (benchmarks/indexing.py), so one
    # per core even though the model shares those cores
    decode_workers: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    clip_batch: int = Field(64, ge=1)  # clips per model call, across files
    upsert_batch: int = Field(32, ge=1)  # points per store write
    # a store write at least this often while a run embeds: searches through a running index
    # see new tracks soon (indexer/owner.py)
    flush_seconds: float = Field(5.0, gt=0)
    # the run stops, with one line, before a store write when the data directory's file
    # system has less free space than this: Qdrant Edge writes through memory maps, where a
    # write the disk has no room for is a SIGBUS, not an error (a run on a full 3 MB tmpfs
    # died so, silently); what was written stays and the next run goes on from it
    min_free_mb: int = Field(256, ge=0)
    # an `indexer index` run on the embedded store serves searches on a loopback port while
    # it writes, so `indexer query` and the like answer through it (indexer/owner.py)
    index_serves: bool = True
    # peak amplitude (0..1) under which a whole file counts as silence
    silence_peak: float = Field(1e-3, ge=0)

    # ---- search and the HTTP API ----
    # first-stage tracks re-ranked: by the exact fusion score (text), by clips (similar tracks)
    candidates: int = Field(100, ge=1, le=10_000)
    # torch threads of a searching process (`indexer serve`, `query`, `similar`): the server runs
    # requests in parallel on its thread pool, and one thread each keeps the latency tail short
    # (p99 29 vs 61 ms at 100k tracks on 2 cores: threads contend with the store's own); also
    # NumPy's BLAS threads while an `indexer index` run serves searches (indexer/owner.py)
    search_threads: int = Field(1, ge=1, le=256)
    # `indexer serve` ranks similar tracks and recommendations from a copy in its memory of at
    # most this many MB (indexer/resident.py: ~3.4 MB per 1k tracks of 9 clips, ~13 of 48),
    # so that they never wait on disk; 0, or a catalog that does not fit: from the store
    resident_mb: int = Field(4096, ge=0)
    # key every API request but the health checks must send in X-API-Key; required to serve
    # on a non-loopback address
    api_key: SecretStr | None = None
    host: str = "127.0.0.1"  # `indexer serve` bind address
    port: int = Field(8000, ge=0, le=65535)  # `indexer serve` port (0 = any free port)
    max_query_chars: int = Field(20_000, ge=1)  # longer query texts are refused (4xx)
    max_limit: int = Field(100, ge=1)  # the most hits one request may ask for
    # the most hits a paged request (similar, recommend) may skip: offset + limit candidates
    # are re-ranked at clip level, so deep pages cost in proportion
    max_offset: int = Field(1000, ge=0)
    max_body_bytes: int = Field(1_000_000, ge=1024)  # larger request bodies are refused (413)
    # folders `POST /index` may start indexing of, each with its subfolders (comma-separated
    # in the environment); none: the route refuses every folder (403). A request never names
    # any other path the server reads (indexer/background.py)
    serve_catalogs: Annotated[tuple[str, ...], NoDecode] = ()
    # ---- distributed indexing (workers/, Celery + Redis) ----
    broker_url: str = "redis://127.0.0.1:6379/0"  # Celery broker; also holds queue bookkeeping
    result_backend: str = "redis://127.0.0.1:6379/1"  # Celery results (status/ping replies only)
    # catalog folders that `indexer beat` rescans (comma-separated in the environment); the
    # folders `indexer queue` was given are registered in Redis and rescanned too
    catalogs: Annotated[tuple[str, ...], NoDecode] = ()
    rescan_interval: float = Field(3600.0, gt=0)  # seconds between beat rescans
    # "minute hour day-of-month month day-of-week"; when set it wins over rescan_interval
    rescan_crontab: str | None = None
    # seconds before a message a worker took but never acknowledged (it died) is delivered
    # again; must be longer than the longest task
    visibility_timeout: int = Field(7200, ge=1)
    embed_task_files: int = Field(8, ge=1)  # files per embed task (their clips share batches)
    retry_max: int = Field(10, ge=0)  # retries of a transiently failing task before it gives up
    retry_backoff_max: float = Field(300.0, gt=0)  # seconds: cap of the exponential backoff
    # seconds a queued file stays claimed (no second embed of it); a claim whose message was
    # lost stops blocking re-queueing after this, if the sweep below has not released it
    claim_ttl: float = Field(86400.0, gt=0)
    # seconds between a store worker's sweeps for claims whose message was lost; one found
    # idle on two sweeps in a row is released and its files planned again
    claim_sweep_interval: float = Field(30.0, gt=0)
    watch_interval: float = Field(2.0, gt=0)  # seconds between `indexer watch` polls
    # seconds a new or changed file's size and mtime must stay the same before it is queued
    watch_settle: float = Field(2.0, ge=0)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, value: object) -> object:
        # Path("") is ".": an empty INDEXER_DATA_DIR would put the store in the working directory
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name a folder (it is empty)")
        return value

    @field_validator("collection")
    @classmethod
    def _check_collection(cls, value: str) -> str:
        # it names folders (qdrant/collections/<alias>-<fingerprint>) and Redis keys: no
        # separators, no "..", nothing a Qdrant server refuses
        if not _COLLECTION.fullmatch(value):
            raise ValueError(
                "must be 1 to 64 letters, digits, '_', '-' or '.', not starting with '.' "
                f"(got {value!r})"
            )
        return value

    @field_validator("extensions", mode="before")
    @classmethod
    def _split_extensions(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            return tuple("." + str(v).strip().lower().lstrip(".") for v in value)
        return value

    @field_validator("catalogs", "serve_catalogs", mode="before")
    @classmethod
    def _split_catalogs(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or value.startswith("cuda:"):
            return value
        raise ValueError("device must be auto, cpu, cuda or cuda:N")

    @property
    def embedded(self) -> bool:
        return not self.qdrant_url
