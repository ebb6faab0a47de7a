"""The shared signing key (feedback/ids.load_or_create_key): replicas starting at once end
with one key, and the key file is never readable by others, not for a moment."""
from __future__ import annotations

import multiprocessing
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from feedback.ids import load_or_create_key, new_completion_id, shared_key, verify_completion_id


def _in_a_process(path: str, barrier, out) -> None:
    barrier.wait()  # every process reaches the "no key yet" check together
    out.put(load_or_create_key(Path(path)))


class _Watcher(threading.Thread):
    """Stats every file in a folder, over and over, until stopped: records any mode that
    lets group or others read."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.stop, self.seen_open, self.looks = folder, threading.Event(), [], 0

    def run(self) -> None:
        while not self.stop.is_set():
            for entry in os.scandir(self.folder):
                try:
                    mode = entry.stat().st_mode
                except FileNotFoundError:  # a temporary file, gone between listing and stat
                    continue
                if stat.S_ISREG(mode) and mode & 0o077:
                    self.seen_open.append((entry.name, oct(mode & 0o777)))
            self.looks += 1


@pytest.fixture
def open_umask():
    # The most permissive umask: a file written without an explicit mode would be 0666.
    old = os.umask(0)
    yield
    os.umask(old)


def test_processes_starting_at_once_end_with_one_private_key(tmp_path, open_umask):
    path = tmp_path / "keys" / "signing.key"
    path.parent.mkdir()
    watcher = _Watcher(path.parent)
    watcher.start()
    ctx = multiprocessing.get_context("spawn")
    n = 8
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_in_a_process, args=(str(path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    keys = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
    watcher.stop.set()
    watcher.join()
    assert all(p.exitcode == 0 for p in procs)
    assert len(set(keys)) == 1, "every replica must end with the same key"
    assert keys[0] == path.read_bytes().strip() and len(keys[0]) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert watcher.looks > 0 and watcher.seen_open == [], watcher.seen_open
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"], "no temporary file left behind"


def test_threads_starting_at_once_end_with_one_private_key(tmp_path, open_umask):
    # Many rounds of a 32-thread race, each on a fresh folder: the race is short-lived, and a
    # key written first and made private afterwards loses it within a few rounds.
    for round_ in range(20):
        folder = tmp_path / str(round_)
        folder.mkdir()
        path = folder / "signing.key"
        barrier = threading.Barrier(32)

        def one(_):
            barrier.wait()
            return load_or_create_key(path)

        watcher = _Watcher(folder)
        watcher.start()
        with ThreadPoolExecutor(32) as pool:
            keys = set(pool.map(one, range(32)))
        watcher.stop.set()
        watcher.join()
        assert len(keys) == 1 and stat.S_IMODE(path.stat().st_mode) == 0o600, f"round {round_}"
        assert watcher.seen_open == [], watcher.seen_open


def test_a_key_file_readable_by_others_is_kept_and_made_private(tmp_path):
    path = tmp_path / "signing.key"
    path.write_text("old-key\n")
    path.chmod(0o644)  # as an older tao-loop left it
    assert load_or_create_key(path) == b"old-key"  # completion ids signed with it still verify
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_empty_key_file_is_an_error_that_says_what_to_do(tmp_path):
    (tmp_path / "signing.key").touch(mode=0o600)
    with pytest.raises(RuntimeError, match="delete it .* or set TAO_SIGNING_KEY"):
        load_or_create_key(tmp_path / "signing.key")


def test_the_configured_key_wins_over_the_file_and_ids_verify_across_replicas(tmp_path):
    assert shared_key("from-env", tmp_path) == b"from-env"
    assert not (tmp_path / "signing.key").exists()
    a, b = shared_key(None, tmp_path), shared_key(None, tmp_path)  # two replicas, one DATA_DIR
    cid = new_completion_id(a, "tenant")
    assert verify_completion_id(b, "tenant", cid)
