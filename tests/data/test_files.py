"""The file-column loop: many files are decoded by forked workers, with the same results, the
same problems and the same cache entries as one process."""

import os

import numpy as np
import pytest

from polymodal.config import ConfigError
from polymodal.data.cache import FeatureCache
from polymodal.data.column import is_missing
from polymodal.data.files import MIN_PARALLEL_FILES, decode_file_column, decode_workers
from polymodal.data.problems import DecodeError, ProblemLog


def write_files(folder, count):
    """`count` small files, of which one is empty, one unreadable by the decoder; and a path
    to a file that does not exist."""
    folder.mkdir()
    names = []
    for index in range(count):
        name = f"{index}.bin"
        (folder / name).write_bytes(b"" if index == 7 else f"payload {index}".encode())
        names.append(name)
    names.append("missing.bin")
    return names


def decode_pid_and_size(path, data):
    """A decoder that says which process ran it; file 11 is 'corrupt'."""
    if path.name == "11.bin":
        raise DecodeError("not a valid file")
    return np.array([os.getpid(), len(data)], dtype=np.int64)


def decode(names, folder, cache):
    log = ProblemLog()
    arrays = decode_file_column(
        names,
        column="f",
        base_dir=folder,
        decode=decode_pid_and_size,
        settings={"kind": "test"},
        log=log,
        cache=cache,
    )
    return arrays, [(p.row, p.reason) for p in log.problems]


def test_workers_decode_like_one_process(tmp_path, monkeypatch):
    names = write_files(tmp_path / "files", MIN_PARALLEL_FILES + 44)
    monkeypatch.setenv("POLYMODAL_WORKERS", "1")
    alone, alone_problems = decode(names, tmp_path / "files", FeatureCache(enabled=False))
    monkeypatch.setenv("POLYMODAL_WORKERS", "2")
    cache = FeatureCache(tmp_path / "cache")
    spread, spread_problems = decode(names, tmp_path / "files", cache)

    assert spread_problems == alone_problems
    assert {row for row, _ in spread_problems} == {7, 11, len(names) - 1}
    for one, other in zip(alone, spread, strict=True):
        assert (one is None) == (other is None)
        if one is not None:
            assert one[1] == other[1], "same bytes decoded, in the same order"
    pids = {int(array[0]) for array in spread if array is not None}
    assert len(pids) == 2 and os.getpid() not in pids, "two worker processes did the decoding"
    decodable = len(names) - 3
    assert (cache.hits, cache.misses) == (0, decodable + 1), "workers' cache counts come back"


def test_workers_fill_the_cache_for_the_next_run(tmp_path, monkeypatch):
    names = write_files(tmp_path / "files", MIN_PARALLEL_FILES)
    monkeypatch.setenv("POLYMODAL_WORKERS", "2")
    decode(names, tmp_path / "files", FeatureCache(tmp_path / "cache"))
    monkeypatch.setenv("POLYMODAL_WORKERS", "1")
    again = FeatureCache(tmp_path / "cache")
    arrays, _ = decode(names[:100], tmp_path / "files", again)  # below the block size
    assert again.misses == 1, "only the corrupt file is decoded again"
    assert again.hits == 100 - 2, "all but the empty and the corrupt file"
    assert all(int(a[0]) != os.getpid() for a in arrays if a is not None), "read from the cache"


def test_a_bad_worker_count_is_a_config_error(monkeypatch):
    monkeypatch.setenv("POLYMODAL_WORKERS", "two")
    with pytest.raises(ConfigError, match="POLYMODAL_WORKERS.*'two'"):
        decode_workers()
    monkeypatch.setenv("POLYMODAL_WORKERS", "3")
    assert decode_workers() == 3


@pytest.mark.parametrize("base", ["/data/table", "/data/table/", "relative/dir", "."])
def test_path_texts_resolves_every_cell_as_path_text_does(base):
    from polymodal.data.files import path_text, path_texts

    cells = [
        "a.png", "sub/b.wav", "/abs/c.png", " padded.png ", "\tx.png", "~/home.png", "",
        "  ", None, float("nan"), 3, "trailing\u00a0", "\u00a0leading", "/",
    ]  # fmt: skip
    expected = [None if is_missing(cell) else path_text(cell, base) for cell in cells]
    assert path_texts(cells, base) == expected


SIGTERM_HANDLED = """
import os, signal, sys, time
from pathlib import Path
import numpy as np
from polymodal.data.cache import FeatureCache
from polymodal.data.files import decode_each

def decode(path, data):
    if path.name == "70.bin":  # in the second chunk: its worker is busy when the run stops
        time.sleep(3600)
    return np.array([os.getpid()])

handler = lambda signum, frame: None  # a Python handler in the parent, as ray.init sets one
signal.signal(signal.SIGTERM, handler)
folder = Path(sys.argv[1])
paths = [str(folder / f"{i}.bin") for i in range(int(sys.argv[2]))]
results = decode_each(paths, decode, "key", FeatureCache(enabled=False))
first = next(results)
assert int(first[0]) != os.getpid(), "decoded by a forked worker"
results.close()  # the run stops early (an error, Ctrl-C): the pool terminates its workers
assert signal.getsignal(signal.SIGTERM) is handler, "the parent's handler is put back"
print("the workers ended")
"""


def test_stopping_early_ends_a_busy_worker_despite_a_python_sigterm_handler(tmp_path):
    """A worker that inherited a Python SIGTERM handler, busy in a long decode when the run
    stops, would outlive the pool's SIGTERM, and the pool would wait for it forever."""
    import subprocess
    import sys

    count = MIN_PARALLEL_FILES + 10
    write_files(tmp_path / "files", count)
    env = os.environ | {"POLYMODAL_WORKERS": "2"}
    run = subprocess.run(
        [sys.executable, "-c", SIGTERM_HANDLED, str(tmp_path / "files"), str(count)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "the workers ended" in run.stdout


def test_no_workers_are_forked_in_a_process_connected_to_ray(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    names = write_files(tmp_path / "files", MIN_PARALLEL_FILES)
    monkeypatch.setenv("POLYMODAL_WORKERS", "2")
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: True))
    arrays, _ = decode(names, tmp_path / "files", FeatureCache(enabled=False))
    assert {int(a[0]) for a in arrays if a is not None} == {os.getpid()}
    monkeypatch.setitem(sys.modules, "ray", SimpleNamespace(is_initialized=lambda: False))
    arrays, _ = decode(names, tmp_path / "files", FeatureCache(enabled=False))
    assert os.getpid() not in {int(a[0]) for a in arrays if a is not None}
