import numpy as np

from polymodal.data import column
from polymodal.data.column import normalised_float16


def test_normalised_float16_matches_float32_arithmetic_across_blocks(monkeypatch):
    """Rows are normalised a block at a time; every block, the last partial one included,
    must give what one float32 pass gives, with padding (real False) left at 0."""
    monkeypatch.setattr(column, "BLOCK_BYTES", 3 * 4 * 5 * 7)  # 3 rows a block
    rng = np.random.default_rng(0)
    raw = rng.normal(2.0, 3.0, (10, 5, 7)).astype(np.float16)
    mean = rng.normal(size=(5, 1)).astype(np.float32)
    std = rng.uniform(0.5, 2.0, (5, 1)).astype(np.float32)
    real = np.arange(7)[None, None, :] < rng.integers(0, 8, 10)[:, None, None]

    got = normalised_float16(raw, mean, std, real)

    expected = ((raw.astype(np.float32) - mean) * (1 / std) * real).astype(np.float16)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, expected)
    assert not got[~np.broadcast_to(real, got.shape)].any()
