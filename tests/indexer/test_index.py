"""End to end on generated fixtures: the embedded store, the real model, real decoders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from collap_model.model import CoLLAP
from collap_model.registry import DEFAULT_MODEL
from indexer import service
from indexer.decode import AudioDecoder
from indexer.pipeline import IndexRun, IndexSummary, ModelHandle
from indexer.search import Searcher
from indexer.settings import Settings
from indexer.store.base import NOT_UTF8, TrackFilter, local_path, point_id
from indexer.store.edge import EdgeStore
from tests.indexer.fixtures import corrupt_files, write_audio, write_flac_comments

Index = Callable[..., IndexSummary]


def catalog(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "mp3": write_audio(
            root / "rock" / "one.mp3", 14.0, seed=1, tags={"title": "One", "artist": "Ann"}
        ),
        "flac": write_audio(root / "rock" / "two.flac", 23.0, seed=2, rate=22_050, channels=1),
        "opus": write_audio(root / "jazz" / "three.opus", 6.0, seed=3),
        "m4a": write_audio(root / "jazz" / "four.m4a", 11.0, seed=4, rate=48_000),
        "wav": write_audio(root / "five.wav", 9.0, seed=5, rate=8_000, channels=1),
    }
    return files


def points(settings: Settings) -> dict[str, dict]:  # type: ignore[type-arg]
    store = EdgeStore(settings.data_dir / "qdrant", settings.collection)
    try:
        target = store.alias_target()
        assert target is not None
        ids = [r.id for r in store.records(target)]
        return {t.id: t.payload for t in store.retrieve(target, ids)}
    finally:
        store.close()


def paths_of(pts: dict[str, dict]) -> list[str]:  # type: ignore[type-arg]
    """The local paths on the points (a name that is not UTF-8 is stored escaped)."""
    return sorted(local_path(f["path"]) for p in pts.values() for f in p["files"])


def test_index_then_nothing_to_do(tmp_path: Path, settings: Settings, index: Index) -> None:
    files = catalog(tmp_path / "music")
    first = index(settings, tmp_path / "music")
    assert (first.indexed, first.failed, first.unchanged, first.removed) == (5, 0, 0, 0)
    assert first.audio_seconds == pytest.approx(14 + 23 + 6 + 11 + 9, abs=0.5)
    pts = points(settings)
    assert len(pts) == 5
    one = next(p for p in pts.values() if p["path"] == str(files["mp3"]))
    facts = (one["title"], one["artist"], one["codec"], one["channels"])
    assert facts == ("One", ["Ann"], "mp3", 2)
    assert one["clip_times"][0] == [0.0, 10.0] and one["clip_times"][-1][1] == pytest.approx(
        14.0, abs=0.1
    )
    assert one["fingerprint"] == first.fingerprint and one["n_clips"] == len(one["clip_times"])
    assert one["content_hash"] and one["indexed_at"] and one["size"] > 0
    two = next(p for p in pts.values() if p["path"] == str(files["flac"]))
    assert two["title"] == "two"  # no tag: the file name
    second = index(settings, tmp_path / "music")
    assert (second.indexed, second.unchanged, second.audio_seconds) == (0, 5, 0.0)
    assert len(points(settings)) == 5


def test_published_progress_ends_with_every_file(
    tmp_path: Path, settings: Settings, model: CoLLAP
) -> None:
    catalog(tmp_path / "music")
    (tmp_path / "music" / "bad.mp3").write_bytes(b"not audio")
    published: list[dict] = []  # type: ignore[type-arg]
    with service.session(settings) as s:
        run = IndexRun(
            settings,
            s.store,
            s.failures,
            ModelHandle(settings, model=model),
            publish=published.append,
        )
        run.run([tmp_path / "music"])
    done = [p["files_done"] for p in published]
    assert done == sorted(done) and published[0]["files_total"] == 6
    # the file that finishes embedding shows, throttled or not, before the collection optimises
    assert [p["state"] for p in published[-2:]] == ["indexing", "optimizing"]
    assert done[-2:] == [6, 6]
    assert (published[-1]["indexed"], published[-1]["failed"]) == (5, 1)


def test_incremental_add_change_touch_delete_and_duplicates(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    music = tmp_path / "music"
    files = catalog(music)
    index(settings, music)
    before = points(settings)
    # add a file, change one, touch one (same bytes), delete one, copy one elsewhere
    write_audio(music / "six.flac", 7.0, seed=6)
    write_audio(files["flac"], 12.0, seed=22, rate=22_050, channels=1)
    os.utime(files["opus"], ns=(1_000_000_000, 1_000_000_000))
    files["wav"].unlink()
    shutil.copy(files["mp3"], music / "copy-of-one.mp3")
    run = index(settings, music)
    assert (run.indexed, run.removed) == (2, 1)
    assert run.unchanged == 4  # mp3, m4a, touched opus, and the copy (known content)
    after = points(settings)
    assert len(after) == 5
    assert str(files["wav"]) not in paths_of(after)
    mp3 = next(p for p in after.values() if p["path"] == str(files["mp3"]))
    assert sorted(f["path"] for f in mp3["files"]) == sorted(
        [str(files["mp3"]), str(music / "copy-of-one.mp3")]
    )
    old_flac = next(pid for pid, p in before.items() if p["path"] == str(files["flac"]))
    assert old_flac not in after
    # deleting one of two identical files keeps the track with the other path
    files["mp3"].unlink()
    run = index(settings, music)
    assert (run.indexed, run.removed) == (0, 1)
    mp3_after = points(settings)[point_id(mp3["content_hash"])]
    assert [f["path"] for f in mp3_after["files"]] == [str(music / "copy-of-one.mp3")]


def test_identical_new_files_are_embedded_once(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    a = write_audio(tmp_path / "m" / "a.flac", 8.0, seed=9)
    shutil.copy(a, tmp_path / "m" / "b.flac")
    run = index(settings, tmp_path / "m")
    assert run.indexed == 2 and run.audio_seconds == pytest.approx(8.0, abs=0.1)
    pts = points(settings)
    assert len(pts) == 1
    assert len(next(iter(pts.values()))["files"]) == 2


def test_bad_files_are_recorded_and_retried_only_when_changed(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    music = tmp_path / "music"
    write_audio(music / "good.mp3", 9.0, seed=1)
    bad = corrupt_files(music / "bad")
    run = index(settings, music)
    assert (run.indexed, run.failed) == (1, len(bad))
    assert len(points(settings)) == 1
    failures = {Path(f.path).name: f.reason for f in service.list_failures(settings)}
    assert set(failures) == {p.name for p in bad.values()}
    assert all(failures.values())
    again = index(settings, music)
    assert (again.indexed, again.failed, again.skipped_failed) == (0, 0, len(bad))
    os.utime(bad["text"], ns=(5_000_000_000, 5_000_000_000))  # touched, same bytes
    assert index(settings, music).skipped_failed == len(bad)
    write_audio(bad["truncated"], 5.0, seed=8)  # repaired
    fixed = index(settings, music)
    assert (fixed.indexed, fixed.skipped_failed) == (1, len(bad) - 1)
    assert bad["truncated"].name not in {Path(f.path).name for f in service.list_failures(settings)}
    bad["text"].unlink()
    index(settings, music)
    assert bad["text"].name not in {Path(f.path).name for f in service.list_failures(settings)}


def test_stored_vectors_match_encode_audio(
    tmp_path: Path, settings: Settings, index: Index, model: CoLLAP
) -> None:
    path = write_audio(tmp_path / "m" / "x.flac", 27.0, seed=4, rate=16_000, channels=1)
    index(settings, tmp_path / "m")
    with AudioDecoder(str(path), 16_000) as dec:
        wave = np.concatenate(list(dec.chunks()))
    expected = model.encode_audio(torch.from_numpy(wave), 16_000)
    store = EdgeStore(settings.data_dir / "qdrant", settings.collection)
    try:
        target = store.alias_target()
        assert target
        (track,) = store.retrieve(target, [r.id for r in store.records(target)], with_vectors=True)
    finally:
        store.close()
    assert track.clips is not None and track.song is not None
    assert torch.allclose(torch.tensor(track.clips), expected.clips, atol=1e-4)
    assert torch.allclose(torch.tensor(track.song), expected.song, atol=1e-4)
    assert track.payload["clip_times"] == expected.clip_times.tolist()


def test_a_new_model_builds_a_new_collection_and_switches(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    from collap_model import load_model
    from indexer.pipeline import ModelHandle

    music = tmp_path / "music"
    write_audio(music / "a.flac", 6.0, seed=1)
    other = tmp_path / "other"
    write_audio(other / "b.flac", 6.0, seed=2)
    first = index(settings, music, other)
    changed = load_model(device="cpu")
    with torch.no_grad():
        changed.song_pool.w_s.bias.add_(0.01)
    run = service.index(settings, [music], model=ModelHandle(settings, model=changed))
    assert run.collection != first.collection and run.alias_switched
    assert run.indexed == 2  # both catalogs of the old collection were rebuilt
    status = service.status(settings)
    assert status["collections"] == [run.collection]
    assert status["tracks"] == 2 and status["fingerprint"] == changed.fingerprint


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "indexer.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )


def test_cli_json_status_failures_and_errors(tmp_path: Path) -> None:
    env = {"INDEXER_DATA_DIR": str(tmp_path / "data"), "INDEXER_DECODE_WORKERS": "1"}
    write_audio(tmp_path / "m" / "a.mp3", 5.0, seed=1)
    (tmp_path / "m" / "b.mp3").write_bytes(b"junk" * 10)
    out = cli("index", str(tmp_path / "m"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    for key in ("indexed", "unchanged", "failed", "removed", "audio_seconds", "seconds"):
        assert key in summary
    assert (summary["indexed"], summary["failed"]) == (1, 1)
    status = json.loads(cli("status", "--json", env=env).stdout)
    assert (status["tracks"], status["failures"]) == (1, 1)
    assert status["clips"] == 1 and status["fingerprint"].startswith(f"{DEFAULT_MODEL}-")
    failures = json.loads(cli("failures", "--json", env=env).stdout)
    assert [Path(f["path"]).name for f in failures] == ["b.mp3"] and failures[0]["reason"]
    bad = cli("index", str(tmp_path / "missing"), env=env)
    assert bad.returncode == 2 and bad.stderr.startswith("indexer: error: no such file")
    assert bad.stderr.count("\n") == 1
    conf = cli("status", env={**env, "INDEXER_DECODE_WORKERS": "0"})
    assert (
        conf.returncode == 2
        and "INDEXER_DECODE_WORKERS" in conf.stderr
        and "Traceback" not in conf.stderr
    )


def test_status_while_another_process_owns_the_store(tmp_path: Path, settings: Settings) -> None:
    from indexer.lock import DataDirLock

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from indexer.lock import DataDirLock;"
         "from indexer.lock import write_json; d = Path(sys.argv[1]); DataDirLock(d).acquire();"
         "write_json(d / 'status.json', {'state': 'optimizing', 'files_done': 20,"
         " 'files_total': 20}); print('held', flush=True); time.sleep(60)",
         str(settings.data_dir)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert DataDirLock(settings.data_dir).is_held_elsewhere()
        info = service.status(settings)
        assert info["live"] is True and str(holder.pid) in info["owner"]
        assert info["progress"]["state"] == "optimizing"
        shown = cli("status", env={"INDEXER_DATA_DIR": str(settings.data_dir)})
        assert shown.returncode == 0, shown.stderr
        assert "progress: 20/20 files embedded, optimizing the collection" in shown.stdout
    finally:
        holder.kill()
        holder.wait()
    assert service.status(settings)["live"] is False


def assert_index_agrees_with_failures(settings: Settings, root: Path) -> None:
    """Every file under `root` is on exactly one track, holding its current content, or in the
    failure log; nothing else is on a track or in the log."""
    from indexer.scan import content_hash

    pts = points(settings)
    indexed = paths_of(pts)
    failed = sorted(f.path for f in service.list_failures(settings))
    on_disk = sorted(str(p) for p in root.rglob("*") if p.is_file())
    assert len(indexed) == len(set(indexed)), "a path is on two tracks"
    assert not set(indexed) & set(failed), "a path is both indexed and failed"
    assert sorted(indexed + failed) == on_disk
    for p in pts.values():
        for f in p["files"]:
            assert content_hash(local_path(f["path"])) == p["content_hash"], f["path"]


def test_files_that_break_leave_the_index(tmp_path: Path, settings: Settings, index: Index) -> None:
    """Issue 20.1 as reported: three indexed files emptied, overwritten with text, truncated."""
    music = tmp_path / "music"
    a, b, c = (write_audio(music / f"{n}.flac", 20.0, seed=i) for i, n in enumerate("abc"))
    assert index(settings, music).indexed == 3
    a.write_bytes(b"")  # : > a.flac
    b.write_text("hello, this is text\n")
    with c.open("r+b") as fh:  # truncate -s 50000 c.flac
        fh.truncate(50_000)
    first = index(settings, music)
    assert (first.indexed, first.failed) == (0, 3)
    again = index(settings, music)
    assert (again.indexed, again.failed, again.skipped_failed) == (0, 0, 3)
    assert points(settings) == {}
    info = service.status(settings)
    assert (info["tracks"], info["failures"]) == (0, 3)
    assert_index_agrees_with_failures(settings, music)


def test_names_that_are_not_utf8_index_and_filter(
    tmp_path: Path, settings: Settings, index: Index, model: CoLLAP
) -> None:
    """`open(b'cat/bad\\xffname.ogg', 'wb')` once made the store's payload encoding raise
    ("surrogates not allowed") and lost the batch on every run. Such a path is stored escaped
    (lossless, JSON-safe), filters by folder, and its failures are logged like any other."""
    music = tmp_path / "music"
    good = write_audio(music / "good.flac", 6.0, seed=1, rate=16_000, channels=1)
    odd = os.fsencode(music)
    bad = os.fsdecode(odd + b"/bad\xffname.flac")
    shutil.copy(write_audio(tmp_path / "x.flac", 7.0, seed=2, rate=16_000, channels=1), bad)
    folder = os.fsdecode(odd + b"/d\xfe")
    os.mkdir(folder)
    shutil.copy(good, os.path.join(folder, "copy.flac"))
    broken = os.fsdecode(odd + b"/d\xfe/x\xffbroken.mp3")
    Path(broken).write_bytes(b"junk" * 100)
    first = index(settings, music)
    assert (first.indexed, first.failed) == (3, 1)
    assert index(settings, music).unchanged == 3  # found again as they are stored
    pts = points(settings)
    assert bad in paths_of(pts) and os.path.join(folder, "copy.flac") in paths_of(pts)
    (track,) = (p for p in pts.values() if local_path(p["path"]) == bad)
    assert track["path"] == NOT_UTF8 + str(music) + "/bad\\xffname.flac"
    assert track["title"] == "bad\\xffname"
    (failure,) = service.list_failures(settings)
    assert failure.path == broken and broken not in failure.reason
    assert_index_agrees_with_failures(settings, music)
    with service.session(settings) as s:
        hits = Searcher(s.store, model).search("music", limit=5, where=TrackFilter(folder=folder))
    assert [h.path for h in hits] == [str(good)]


def test_tags_with_several_values_are_lists_and_each_filters(
    tmp_path: Path, settings: Settings, index: Index, model: CoLLAP
) -> None:
    music = tmp_path / "music"
    duet = write_flac_comments(
        music / "duet.flac",
        6.0,
        ["TITLE=Duet", "ARTIST=Ann", "ARTIST=Bob", "GENRE=rock", "GENRE=jazz"],
        seed=1,
    )
    joined = write_audio(
        music / "joined.mp3", 6.0, seed=2, tags={"artist": "AC/DC; Cat", "genre": "Rock/Pop"}
    )
    index(settings, music)
    by_path = {local_path(p["path"]): p for p in points(settings).values()}
    assert (by_path[str(duet)]["artist"], by_path[str(duet)]["genre"]) == (
        ["Ann", "Bob"], ["rock", "jazz"]
    )  # fmt: skip
    assert (by_path[str(joined)]["artist"], by_path[str(joined)]["genre"]) == (
        ["AC/DC", "Cat"], ["Rock", "Pop"]
    )  # fmt: skip
    with service.session(settings) as s:
        searcher = Searcher(s.store, model)

        def found(**where: str) -> list[str]:
            return [h.path for h in searcher.search("music", 5, TrackFilter(**where))]

        assert found(genre="rock") == found(genre="jazz") == found(artist="Bob") == [str(duet)]
        assert found(artist="AC/DC") == found(genre="Pop") == [str(joined)]
        (hit,) = searcher.search("music", 5, TrackFilter(artist="Ann"))
    assert hit.artist == "Ann; Bob"


def test_a_broken_copy_keeps_the_track_of_the_good_one(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    music = tmp_path / "music"
    good = write_audio(music / "good.flac", 6.0, seed=1, rate=16_000, channels=1)
    shutil.copy(good, music / "copy.flac")
    index(settings, music)
    (music / "copy.flac").write_bytes(b"junk" * 100)
    index(settings, music)
    (track,) = points(settings).values()
    assert [f["path"] for f in track["files"]] == [str(good)]
    assert_index_agrees_with_failures(settings, music)


def test_a_file_that_breaks_during_the_run_leaves_the_index(
    tmp_path: Path, settings: Settings, model: CoLLAP
) -> None:
    music = tmp_path / "music"
    song = write_audio(music / "song.flac", 6.0, seed=1, rate=16_000, channels=1)
    handle = ModelHandle(settings, model=model)
    service.index(settings, [music], model=handle)
    write_audio(song, 7.0, seed=2, rate=16_000, channels=1)  # changed: planned for embedding

    class BreakIt:
        """Progress that empties the file after the plan, before it is decoded."""

        def start(self, files: int) -> None:
            song.write_bytes(b"")

        def update(self, files_done: int, audio_seconds: float) -> None: ...

        def finish(self) -> None: ...

    summary = service.index(settings, [music], model=handle, progress=BreakIt())
    assert (summary.indexed, summary.failed) == (0, 1)
    assert points(settings) == {}
    assert_index_agrees_with_failures(settings, music)
    write_audio(song, 5.0, seed=3, rate=16_000, channels=1)  # repaired
    assert service.index(settings, [music], model=handle).indexed == 1
    assert_index_agrees_with_failures(settings, music)


def test_files_that_change_or_vanish_while_being_read_are_failures_retried(
    tmp_path: Path, settings: Settings, model: CoLLAP
) -> None:
    """A file rewritten after it was hashed, before it was decoded: storing what was decoded
    under the old content's id would make the track lie; it is a failure, read again next run.
    A file deleted then is a failure with that reason, cleared once the run sees it gone."""
    music = tmp_path / "music"
    moving = write_audio(music / "moving.flac", 6.0, seed=1, rate=16_000, channels=1)
    going = write_audio(music / "going.flac", 6.0, seed=2, rate=16_000, channels=1)
    handle = ModelHandle(settings, model=model)

    class Meddle:
        """Progress that rewrites one file and deletes the other after the plan."""

        def start(self, files: int) -> None:
            write_audio(moving, 8.0, seed=3, rate=16_000, channels=1)
            going.unlink()

        def update(self, files_done: int, audio_seconds: float) -> None: ...

        def finish(self) -> None: ...

    summary = service.index(settings, [music], model=handle, progress=Meddle())
    assert (summary.indexed, summary.failed) == (0, 2)
    reasons = {Path(f.path).name: f.reason for f in service.list_failures(settings)}
    assert reasons["moving.flac"].startswith("changed while being read")
    assert reasons["going.flac"] == "vanished before it was read"
    again = service.index(settings, [music], model=handle)
    assert (again.indexed, again.failed) == (1, 0)
    assert_index_agrees_with_failures(settings, music)


def _without_dac_override() -> list[str]:
    """A command prefix under which file permissions hold: root reads any file, unless its
    process lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (then it is held to the owner's
    bits like anyone)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root, needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]


def test_unreadable_files_and_folders_are_failures_tried_again(tmp_path: Path) -> None:
    prefix = _without_dac_override()
    env = {**os.environ, "INDEXER_DATA_DIR": str(tmp_path / "data"), "INDEXER_DECODE_WORKERS": "1"}
    music = tmp_path / "music"
    locked = write_audio(music / "locked.flac", 6.0, seed=1, rate=16_000, channels=1)
    inner = write_audio(music / "closed" / "inner.flac", 6.0, seed=2, rate=16_000, channels=1)
    write_audio(music / "good.flac", 6.0, seed=3, rate=16_000, channels=1)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "indexer.cli", *args],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip

    assert json.loads(run("index", str(music), "--json").stdout)["indexed"] == 3
    write_audio(locked, 7.0, seed=4, rate=16_000, channels=1)  # new content, to be read
    locked.chmod(0)
    (music / "closed").chmod(0)
    try:
        out = run("index", str(music), "--json")
        failures = json.loads(run("failures", "--json").stdout)
    finally:
        locked.chmod(0o644)
        (music / "closed").chmod(0o755)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["indexed"], summary["failed"], summary["removed"]) == (0, 2, 0)
    assert {(Path(f["path"]).name, f["reason"]) for f in failures} == {
        ("locked.flac", "cannot read the file: Permission denied"),
        ("closed", "cannot list the folder: Permission denied"),
    }
    paths = paths_of(points(Settings(data_dir=tmp_path / "data", _env_file=None)))  # type: ignore[call-arg]
    assert str(inner) in paths and str(locked) not in paths  # kept; its old content detached
    again = json.loads(run("index", str(music), "--json").stdout)
    assert (again["indexed"], again["failed"]) == (1, 0)  # same mtime: tried again all the same
    assert json.loads(run("failures", "--json").stdout) == []


def test_an_index_that_disagrees_with_the_failure_log_is_repaired(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    """A run stopped between recording a failure and detaching the file's old track (or one
    by a version that did not detach) left both; the next run takes the track off."""
    from indexer.scan import CatalogFile, content_hash

    music = tmp_path / "music"
    song = write_audio(music / "song.flac", 6.0, seed=1, rate=16_000, channels=1)
    index(settings, music)
    song.write_text("not audio any more\n")
    st = song.stat()
    log = service.failure_log(settings)
    try:
        log.record(
            CatalogFile(str(song), str(music), st.st_size, st.st_mtime_ns),
            content_hash(str(song)),
            "not audio",
        )
    finally:
        log.close()
    assert len(points(settings)) == 1  # the disagreement
    run = index(settings, music)
    assert (run.indexed, run.failed, run.skipped_failed) == (0, 0, 1)
    assert points(settings) == {}
    assert_index_agrees_with_failures(settings, music)


@pytest.mark.slow
def test_index_and_failure_log_agree_after_any_sequence_of_changes(
    tmp_path: Path, settings: Settings, index: Index
) -> None:
    """Seeded random changes to a few files (good audio, some of it shared, empty, text,
    truncated, copied, deleted, touched), a run after every three."""
    import random

    rng = random.Random(20)
    music = tmp_path / "music"
    names = [music / f"{n}.flac" for n in "abcde"]

    def good(path: Path) -> None:  # four contents, so paths share some
        write_audio(path, 3.0, seed=rng.randrange(4), rate=16_000, channels=1)

    def truncated(path: Path) -> None:
        good(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])

    def copied(path: Path) -> None:
        others = [p for p in names if p.exists() and p != path]
        if others:
            shutil.copy(rng.choice(others), path)

    def touched(path: Path) -> None:
        if path.exists():
            os.utime(path, ns=(rng.randrange(10**18), rng.randrange(10**18)))

    changes: list[Callable[[Path], None]] = [
        good,
        good,
        lambda p: p.write_bytes(b""),
        lambda p: p.write_text("text, not audio\n" * rng.randrange(1, 50)),
        truncated,
        copied,
        lambda p: p.unlink(missing_ok=True),
        touched,
    ]
    for p in names:
        good(p)
    index(settings, music)
    assert_index_agrees_with_failures(settings, music)
    for _ in range(6):
        for _ in range(3):
            rng.choice(changes)(rng.choice(names))
        index(settings, music)
        assert_index_agrees_with_failures(settings, music)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["index", ""], {}, "an empty path names no folder"),
        (["index", "  "], {}, "an empty path names no folder"),
        (["status"], {"INDEXER_DATA_DIR": ""}, "bad setting INDEXER_DATA_DIR: Value error, must"),
        (["status"], {"INDEXER_COLLECTION": "../x"}, "bad setting INDEXER_COLLECTION"),
        (["index", "music"], {"INDEXER_COLLECTION": "a/b"}, "bad setting INDEXER_COLLECTION"),
    ],
)
def test_cli_refuses_empty_paths_and_names_that_leave_their_folder(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    """An empty path or INDEXER_DATA_DIR meant the working directory; INDEXER_COLLECTION=../x
    wrote outside qdrant/collections/. Each is refused in one line and nothing is written."""
    work = tmp_path / "work"
    write_audio(work / "music" / "a.flac", 3.0, seed=1, rate=16_000, channels=1)
    out = subprocess.run(
        [sys.executable, "-m", "indexer.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=work,
        env={**os.environ, "INDEXER_DATA_DIR": str(tmp_path / "data"), **env},
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("indexer: error: ") and message in out.stderr
    assert sorted(p.name for p in work.iterdir()) == ["music"]
    assert not (tmp_path / "data").exists()


EVIL = "evil\x1b]0;PWNED\x07\x1b[2J"  # retitles the terminal, then clears it


def test_cli_escapes_control_characters_in_everything_it_prints(tmp_path: Path) -> None:
    """File names (and settings) with terminal escape codes are shown escaped: in `failures`,
    the query table, status, errors and -v logs; --json keeps them as JSON escapes."""
    music = tmp_path / "music"
    write_audio(music / f"{EVIL}.flac", 4.0, seed=1, rate=16_000, channels=1)
    (music / f"{EVIL}-broken.mp3").write_bytes(b"junk" * 50)
    env = {"INDEXER_DATA_DIR": str(tmp_path / f"data{EVIL}"), "INDEXER_DECODE_WORKERS": "1"}
    shown = "evil\\x1b]0;PWNED\\x07\\x1b[2J"
    runs = {
        "index -v": cli("-v", "index", str(music), env=env),
        "failures": cli("failures", env=env),
        "query": cli("query", "a song", env=env),
        "status": cli("status", env=env),
        "error": cli("index", str(music / f"{EVIL}-missing"), env=env),
    }
    for name, out in runs.items():
        printed = out.stdout + out.stderr
        assert "\x1b" not in printed and "\x07" not in printed, (name, printed)
    assert runs["index -v"].returncode == 0 and shown in runs["index -v"].stderr
    assert f"{shown}-broken.mp3" in runs["failures"].stdout
    assert f"{shown}.flac" in runs["query"].stdout
    assert f"data{shown}" in runs["status"].stdout
    assert runs["error"].returncode == 2 and f"{shown}-missing" in runs["error"].stderr
    (failure,) = json.loads(cli("failures", "--json", env=env).stdout)
    assert failure["path"] == str(music / f"{EVIL}-broken.mp3")
