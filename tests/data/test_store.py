"""Prepared arrays on disk: written a chunk at a time, read a batch of rows at a time."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from polymodal.data.store import ArrayWriter, DiskArray


def written(path, array: np.ndarray, chunk: int) -> DiskArray:
    writer = ArrayWriter(path, len(array))
    for start in range(0, len(array), chunk):
        writer.append(array[start : start + chunk])
    writer.close()
    return DiskArray(path)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int64, np.bool_])
def test_chunks_written_make_the_same_npy_file_numpy_reads(tmp_path, dtype):
    array = (np.random.default_rng(0).normal(size=(103, 3, 5)) > 0.2).astype(dtype)
    written(tmp_path / "a.npy", array, chunk=17)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), array)


def test_rows_in_any_order_with_repeats_match_indexing_in_memory(tmp_path):
    array = np.random.default_rng(1).normal(size=(500, 4, 7)).astype(np.float16)
    disk = written(tmp_path / "a.npy", array, chunk=128)
    memory = torch.from_numpy(array)
    for index in (
        torch.randperm(500)[:64],
        torch.arange(100, 356),  # one run of consecutive rows
        torch.tensor([3, 3, 499, 0, 1, 2, 250]),
        torch.tensor([], dtype=torch.int64),
    ):
        got = disk[index]
        assert got.dtype == memory.dtype and got.shape == memory[index].shape
        assert torch.equal(got, memory[index])
    assert torch.equal(disk[np.array([5, 6])], memory[[5, 6]])
    assert len(disk) == 500 and disk.nbytes == array.nbytes


def test_rows_outside_the_array_are_an_index_error(tmp_path):
    disk = written(tmp_path / "a.npy", np.zeros((10, 2), np.float32), chunk=10)
    with pytest.raises(IndexError, match="outside 0..9"):
        disk[torch.tensor([10])]
    with pytest.raises(IndexError):
        disk[torch.tensor([-1])]


def test_a_writer_refuses_a_chunk_of_another_shape_or_a_wrong_row_count(tmp_path):
    writer = ArrayWriter(tmp_path / "a.npy", 4)
    writer.append(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="shaped"):
        writer.append(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="more than the 4 rows"):
        writer.append(np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="2 rows written of 4"):
        writer.close()


def test_a_pickled_reader_opens_its_own_descriptor(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(20, 3)
    disk = written(tmp_path / "a.npy", array, chunk=7)
    disk[torch.tensor([1])]  # the original's descriptor is open
    copy = pickle.loads(pickle.dumps(disk))
    assert copy._fd is None
    assert torch.equal(copy[torch.tensor([19, 0])], torch.from_numpy(array[[19, 0]]))
    disk.close()  # the copy's descriptor is its own
    assert torch.equal(copy[torch.tensor([4])], torch.from_numpy(array[[4]]))


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_reading_every_row_does_not_grow_resident_memory_with_the_file(tmp_path):
    """The point of reading with pread: a 256 MB file read whole, batch by batch, leaves the
    process's resident memory where it was (a memory map would add the file's size)."""
    rows, row = 4096, np.ones((256, 64), np.float32)  # 64 KB a row, 256 MB in all
    writer = ArrayWriter(tmp_path / "big.npy", rows)
    for _ in range(rows // 256):
        writer.append(np.broadcast_to(row, (256, *row.shape)))
    writer.close()
    disk = DiskArray(tmp_path / "big.npy")
    before = resident_bytes()
    total = 0.0
    for batch in torch.randperm(rows).split(64):
        total += float(disk[batch][:, 0, 0].sum())
    assert total == rows
    assert resident_bytes() - before < 64 * 2**20
