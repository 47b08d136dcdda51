"""The kernels' out-of-place transpose (csrc/transpose.c, _kernels.transpose_into), which
the kernels use to write weight gradients into torch's layout (and the GRU's BLAS path to
convert torch's weights): exact against NumPy's .T on every edge of its tiling (odd sizes, partial 8 x 8 and
32 x 32 tiles), both precisions, both SIMD paths, one thread and a split, row strides
wider than the rows; the source left as it was; bad arguments refused."""
import numpy as np
import pytest

import fusedrnn
from fusedrnn import _kernels

# (rows, cols): single rows and columns, odd sizes, partial register blocks and tiles,
# and matrices large enough to split between threads (>= 2^17 elements).
SHAPES = [(1, 1), (1, 67), (67, 1), (3, 5), (8, 8), (9, 7), (31, 33), (32, 32), (67, 3),
          (100, 257), (512, 128), (1200, 300), (300, 1201)]


@pytest.fixture(params=["simd", "generic"])
def simd_path(request):
    """The AVX2 register blocks (where the CPU has them) and the element loop."""
    previous = _kernels.set_path_overrides(simd=-1 if request.param == "simd" else 0)
    yield request.param
    _kernels.set_path_overrides(*previous)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows, cols", SHAPES)
def test_transpose_is_exact(rows, cols, dtype, threads, simd_path, rng):
    src = rng.standard_normal((rows, cols)).astype(dtype)
    before = src.copy()
    dst = np.full((cols, rows), np.nan, dtype)
    with fusedrnn.threads(threads):
        _kernels.transpose_into(src, dst)
    np.testing.assert_array_equal(dst, src.T)
    np.testing.assert_array_equal(src, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_slices_of_wider_matrices(dtype, rng):
    """What the GRU's gate blocks use: a band of source rows into a band of dst columns,
    and a band of source columns into a band of dst rows; nothing else written."""
    h, n = 37, 70
    weights = rng.standard_normal((3 * h, n)).astype(dtype)
    keras = np.full((n, 3 * h), np.nan, dtype)
    _kernels.transpose_into(weights[h:2 * h], keras[:, 0:h])
    np.testing.assert_array_equal(keras[:, 0:h], weights[h:2 * h].T)
    assert np.isnan(keras[:, h:]).all()
    back = np.full((3 * h, n), np.nan, dtype)
    _kernels.transpose_into(keras[:, 0:h], back[h:2 * h])
    np.testing.assert_array_equal(back[h:2 * h], weights[h:2 * h])
    assert np.isnan(back[:h]).all() and np.isnan(back[2 * h:]).all()


def test_empty_matrices_are_a_no_op():
    _kernels.transpose_into(np.empty((0, 5), np.float32), np.empty((5, 0), np.float32))
    _kernels.transpose_into(np.empty((4, 0), np.float64), np.empty((0, 4), np.float64))


def test_bad_arguments_are_refused_clearly():
    a = np.zeros((4, 6), np.float32)
    with pytest.raises(TypeError, match="src: expected a NumPy array"):
        _kernels.transpose_into([[1.0]], np.zeros((1, 1), np.float32))
    with pytest.raises(ValueError, match="dst: expected a 2-D array"):
        _kernels.transpose_into(a, np.zeros(24, np.float32))
    with pytest.raises(TypeError, match="both float32 or both float64"):
        _kernels.transpose_into(a, np.zeros((6, 4), np.float64))
    with pytest.raises(TypeError, match="both float32 or both float64"):
        _kernels.transpose_into(a.astype(np.int32), np.zeros((6, 4), np.int32))
    with pytest.raises(ValueError, match=r"dst: expected shape \(6, 4\)"):
        _kernels.transpose_into(a, np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="contiguous rows"):
        _kernels.transpose_into(np.zeros((6, 4), np.float32).T, np.zeros((6, 4), np.float32))
    read_only = np.zeros((6, 4), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _kernels.transpose_into(a, read_only)
    square = np.arange(16, dtype=np.float32).reshape(4, 4)
    with pytest.raises(ValueError, match="must not overlap"):
        _kernels.transpose_into(square, square)
    np.testing.assert_array_equal(square, np.arange(16).reshape(4, 4))
