"""The weight gradients' product, C = A^T B or C += A^T B, and B's column sums (the bias
gradient) taken on the way (csrc/weight_gradient.c), against float64 NumPy: every edge of its blocking (partial 6-row strips and 16- or 32-column panels,
sums longer than one 256-row block, A wider than one 384-column block), row strides wider
than the rows, and the operands left as they were.  The backward tests cover the same
product inside every cell's gradients."""
import numpy as np
import pytest

from fusedrnn import _kernels

pytestmark = pytest.mark.skipif(not _kernels.cpu_has_avx2_fma(),
                                reason="the weight-gradient tiles are AVX2+FMA code; "
                                       "other CPUs run BLAS (covered by the backward tests)")

# (m, n, k): one row or column; partial strips (m % 6) and panels (n % 16; with AVX-512
# n % 32, partial in either half); k across the 256-row blocks (255, 256, 257, 600) and
# the AVX-512 path's 128-row ones (127-130); m above 384 (two blocks of A's columns); an
# odd number of strips (the 12-row tiles' zero partner); no rows.
SHAPES = [(1, 1, 1), (3, 17, 5), (6, 16, 256), (7, 33, 257), (67, 3, 600), (67, 67, 255),
          (128, 256, 300), (400, 40, 520), (13, 200, 0), (5, 24, 1), (7, 49, 129),
          (13, 20, 128), (12, 32, 130), (19, 47, 127)]


def _strided(rng, rows, cols, pad):
    """A (rows, cols) float32 view with `pad` more columns per row, and its base."""
    base = rng.standard_normal((rows, cols + pad)).astype(np.float32)
    return base[:, :cols], base


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_tiles_match_float64(m, n, k, pad, accumulate):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a, a_base = _strided(rng, k, m, pad)
    b, b_base = _strided(rng, k, n, pad)
    c, c_base = _strided(rng, m, n, pad)
    sums = rng.standard_normal(n).astype(np.float32)
    a_before, b_before, c_before, sums_before = a_base.copy(), b_base.copy(), c_base.copy(), sums.copy()
    _kernels.weight_gradient_tiles(a, b, c, accumulate, sums)
    expected = a.astype(np.float64).T @ b.astype(np.float64)
    expected_sums = b.astype(np.float64).sum(axis=0)
    if accumulate:
        expected += c_before[:, :n]
        expected_sums += sums_before
    scale = np.sqrt(max(k, 1)) * 4
    np.testing.assert_allclose(c, expected, rtol=0, atol=2e-6 * scale)
    np.testing.assert_allclose(sums, expected_sums, rtol=0, atol=2e-6 * scale)
    np.testing.assert_array_equal(a_base, a_before)
    np.testing.assert_array_equal(b_base, b_before)
    # the columns past n in C's rows are not C's
    np.testing.assert_array_equal(c_base[:, n:], c_before[:, n:])


def test_the_sums_are_optional_and_leave_the_product_alone():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 7)).astype(np.float32)
    b = rng.standard_normal((300, 33)).astype(np.float32)
    with_sums, without = np.empty((7, 33), np.float32), np.empty((7, 33), np.float32)
    _kernels.weight_gradient_tiles(a, b, with_sums, False, np.empty(33, np.float32))
    _kernels.weight_gradient_tiles(a, b, without, False)
    np.testing.assert_array_equal(with_sums, without)


def test_bad_operands_are_rejected():
    a = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="b: expected 4 rows"):
        _kernels.weight_gradient_tiles(a, np.zeros((5, 2), np.float32), np.zeros((3, 2), np.float32), False)
    with pytest.raises(ValueError, match=r"c: expected shape \(3, 2\)"):
        _kernels.weight_gradient_tiles(a, np.zeros((4, 2), np.float32), np.zeros((2, 3), np.float32), False)
    with pytest.raises(ValueError, match="a: expected contiguous rows"):
        _kernels.weight_gradient_tiles(np.zeros((4, 6), np.float32)[:, ::2], np.zeros((4, 2), np.float32),
                                       np.zeros((3, 2), np.float32), False)
    with pytest.raises(ValueError, match=r"b_sums: expected shape \(2,\)"):
        _kernels.weight_gradient_tiles(a, np.zeros((4, 2), np.float32), np.zeros((3, 2), np.float32), False,
                                       np.zeros(3, np.float32))


def test_the_simd_override_sends_the_product_to_blas():
    """simd=0 (the generic path, tested by test_kernel_paths) turns the tiles off: the
    kernels then use BLAS, and the tiles themselves refuse."""
    previous = _kernels.set_path_overrides(simd=0)
    try:
        with pytest.raises(RuntimeError, match="status 2"):
            _kernels.weight_gradient_tiles(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32),
                                           np.zeros((2, 2), np.float32), False)
    finally:
        _kernels.set_path_overrides(*previous)
