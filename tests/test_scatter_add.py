"""The Embedding layer's gradient kernel, table[ids[i]] += rows[i] (csrc/scatter.c,
_kernels.scatter_add_rows): bitwise np.add.at (same sums in the same order) with repeated
ids, odd widths, both precisions, any integer ids and row strides wider than the rows; bad
ids and arguments refused with the table left as it was.  The layer's gradient itself is
checked by tests/test_layers_gradcheck.py and the Keras parity tests."""
import numpy as np
import pytest

from fusedrnn import _kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64, np.uint16, np.uint64])
@pytest.mark.parametrize("vocabulary, dim, n", [(1, 1, 5), (7, 3, 40), (100, 67, 1000),
                                                (5, 32, 0), (3, 2, 1)])
def test_matches_np_add_at_bitwise(vocabulary, dim, n, id_dtype, dtype, rng):
    ids = rng.integers(0, vocabulary, size=n).astype(id_dtype)  # many repeats
    rows = rng.standard_normal((n, dim)).astype(dtype)
    start = rng.standard_normal((vocabulary, dim)).astype(dtype)  # adds to what is there
    expected = start.copy()
    np.add.at(expected, ids, rows)
    table = start.copy()
    ids_before, rows_before = ids.copy(), rows.copy()
    _kernels.scatter_add_rows(table, ids, rows)
    np.testing.assert_array_equal(table, expected)
    np.testing.assert_array_equal(ids, ids_before)
    np.testing.assert_array_equal(rows, rows_before)


def test_row_strides_wider_than_the_rows(rng):
    base_table = rng.standard_normal((9, 20)).astype(np.float32)
    base_rows = rng.standard_normal((30, 11)).astype(np.float32)
    table, rows = base_table[:, 3:10], base_rows[:, 2:9]  # 7 columns each, strided
    ids = rng.integers(0, 9, size=30)
    expected = base_table.copy()
    np.add.at(expected[:, 3:10], ids, rows)
    _kernels.scatter_add_rows(table, ids, rows)
    np.testing.assert_array_equal(base_table, expected)  # columns outside the view untouched


@pytest.mark.parametrize("bad", [-1, 4, 2**40])
def test_ids_out_of_range_are_refused_and_nothing_is_written(bad, rng):
    table = rng.standard_normal((4, 3))
    before = table.copy()
    ids = np.array([0, 1, bad, 2])
    with pytest.raises(ValueError, match=r"ids: expected values in \[0, 4\)"):
        _kernels.scatter_add_rows(table, ids, np.ones((4, 3)))
    np.testing.assert_array_equal(table, before)


def test_huge_unsigned_ids_are_refused():
    table = np.zeros((4, 2))
    with pytest.raises(ValueError, match="ids: expected values"):
        _kernels.scatter_add_rows(table, np.array([2**63 + 1], np.uint64), np.ones((1, 2)))
    assert not table.any()


def test_an_empty_table_refuses_any_id():
    with pytest.raises(ValueError, match=r"\[0, 0\)"):
        _kernels.scatter_add_rows(np.zeros((0, 2)), np.array([0]), np.ones((1, 2)))


def test_bad_arguments_are_refused_clearly():
    table = np.zeros((5, 3), np.float32)
    rows = np.ones((2, 3), np.float32)
    ids = np.array([0, 4])
    with pytest.raises(TypeError, match="table: expected a NumPy array"):
        _kernels.scatter_add_rows([[0.0] * 3], ids, rows)
    with pytest.raises(ValueError, match="rows: expected a 2-D array"):
        _kernels.scatter_add_rows(table, ids, np.ones(6, np.float32))
    with pytest.raises(TypeError, match="both float32 or both float64"):
        _kernels.scatter_add_rows(table, ids, rows.astype(np.float64))
    with pytest.raises(TypeError, match="ids: expected integers"):
        _kernels.scatter_add_rows(table, ids.astype(np.float32), rows)
    with pytest.raises(ValueError, match=r"ids: expected shape \(2,\)"):
        _kernels.scatter_add_rows(table, np.array([0, 1, 2]), rows)
    with pytest.raises(ValueError, match="rows: expected 3 columns"):
        _kernels.scatter_add_rows(table, ids, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="contiguous rows"):
        _kernels.scatter_add_rows(table, ids, np.ones((3, 2), np.float32).T)
    read_only = np.zeros((5, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _kernels.scatter_add_rows(read_only, ids, rows)
    with pytest.raises(ValueError, match="must not overlap"):
        _kernels.scatter_add_rows(table, ids, table[:2])
    assert not table.any()
