from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from indexer import service
from indexer.pipeline import IndexSummary, ModelHandle
from indexer.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", decode_workers=1, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def index(model) -> Callable[..., IndexSummary]:  # type: ignore[no-untyped-def]
    """Run an indexing pass with the session's model (loaded once for the whole suite)."""

    def run(settings: Settings, *paths: Path) -> IndexSummary:
        return service.index(settings, list(paths), model=ModelHandle(settings, model=model))

    return run
