"""Sample folders are built once: atomically, versioned, and safe when several builders race."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest

from glacierscale.demo.sample import SampleCatalog, build_once
from glacierscale.train import everest_sample


def _writer(text: str, calls: list[str] | None = None) -> Callable[[Path], None]:
    """A tiny build: one file holding ``text`` (and a note of the call in ``calls``)."""

    def build(folder: Path) -> None:
        if calls is not None:
            calls.append(text)
        (folder / "items").mkdir()
        (folder / "items" / "a.json").write_text(text)

    return build


def _leftovers(parent: Path) -> list[str]:
    """Temporary or set-aside folders a build left beside its destination."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_built_once_then_reused(tmp_path: Path) -> None:
    dest, calls = tmp_path / "samples" / "s", []
    assert build_once(dest, "1", _writer("one", calls)) == dest
    assert build_once(dest, "1", _writer("two", calls)) == dest
    assert calls == ["one"]
    assert (dest / "items" / "a.json").read_text() == "one"
    assert _leftovers(dest.parent) == []


def test_stale_or_unmarked_folder_is_rebuilt(tmp_path: Path) -> None:
    dest = tmp_path / "s"
    build_once(dest, "1", _writer("v1"))
    build_once(dest, "2", _writer("v2"))
    assert (dest / "items" / "a.json").read_text() == "v2"
    # a folder without a version marker (e.g. from before markers) is not trusted either
    unmarked = tmp_path / "old"
    (unmarked / "items").mkdir(parents=True)
    (unmarked / "items" / "a.json").write_text("old")
    build_once(unmarked, "2", _writer("new"))
    assert (unmarked / "items" / "a.json").read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_failed_build_leaves_nothing_and_keeps_the_old_folder(tmp_path: Path) -> None:
    def broken(folder: Path) -> None:
        (folder / "half.json").write_text("{")
        raise FileNotFoundError("no rasters")

    with pytest.raises(FileNotFoundError, match="no rasters"):
        build_once(tmp_path / "s", "1", broken)
    assert list(tmp_path.iterdir()) == []
    # a failed rebuild leaves the previous version where it was
    build_once(tmp_path / "s", "1", _writer("v1"))
    with pytest.raises(FileNotFoundError):
        build_once(tmp_path / "s", "2", broken)
    assert (tmp_path / "s" / "items" / "a.json").read_text() == "v1"
    assert _leftovers(tmp_path) == []


def test_loser_of_the_rename_race_keeps_the_winner(tmp_path: Path) -> None:
    dest = tmp_path / "s"
    build_once(dest, "1", _writer("stale"))

    def slow(folder: Path) -> None:
        # another builder finishes while this one is still writing: this one loses the rename
        build_once(dest, "2", _writer("winner"))
        _writer("loser")(folder)

    assert build_once(dest, "2", slow) == dest
    assert (dest / "items" / "a.json").read_text() == "winner"
    assert _leftovers(tmp_path) == []


def test_concurrent_builders_all_end_with_a_complete_folder(tmp_path: Path) -> None:
    dest, n = tmp_path / "s", 6
    build_once(dest, "1", _writer("stale"))
    for version in ("2", "3", "4"):  # each round replaces a stale folder under contention
        together = threading.Barrier(n)

        def build(folder: Path, barrier: threading.Barrier = together) -> None:
            # every builder has its own temporary folder before any of them renames
            barrier.wait(timeout=10)
            _writer("fresh")(folder)

        def one(_: int, v: str = version, b: Callable[[Path], None] = build) -> str:
            # read right after return: a winner's folder must not vanish under its readers
            return (build_once(dest, v, b) / "items" / "a.json").read_text()

        with ThreadPoolExecutor(n) as pool:
            assert list(pool.map(one, range(n))) == ["fresh"] * n
        assert (dest / ".sample-version").read_text() == version
    assert _leftovers(tmp_path) == []


def _build_in_process(dest: str) -> str:
    """One builder process: build (or reuse) ``dest`` and read it back."""
    out = build_once(Path(dest), "1", _writer(f"pid {os.getpid()}"))
    return (out / "items" / "a.json").read_text()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_processes_agree_on_one_folder(tmp_path: Path) -> None:
    dest = tmp_path / "s"
    with mp.get_context("fork").Pool(3) as pool:
        seen = pool.map(_build_in_process, [str(dest)] * 6)
    # whoever won, every process read the one folder that is in place now
    assert set(seen) == {(dest / "items" / "a.json").read_text()}
    assert _leftovers(tmp_path) == []


def test_everest_sample_is_a_sample_catalog_built_once(shared_data: Path,
                                                     sample_cache: Path) -> None:
    s = everest_sample(shared_data, sample_cache)
    assert isinstance(s, SampleCatalog) and s.offline and s.start == s.end == date(2000, 10, 30)
    assert s.reference is not None and Path(s.reference).name == "15_rgi60_glacier_outlines.gpkg"
    assert Path(s.reference).is_file()
    item = next(Path(s.catalog).glob("*.json"))
    before = item.stat().st_mtime_ns
    assert everest_sample(shared_data, sample_cache) == s  # reused, not rebuilt
    assert item.stat().st_mtime_ns == before
