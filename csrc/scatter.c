/* Row scatter-add, table[ids[i]] += rows[i]: the Embedding layer's weight gradient (every
 * looked-up row's gradient added to its id's row of the table).
 *
 * Why not NumPy: np.add.at(table, ids, rows) goes element by element through its generic
 * ufunc machinery: 2.8 ms for a batch of 32 x 200 ids of 32 features (6400 rows), a fifth of
 * a Model.fit step with Embedding(10000, 32) -> LSTM(64); sorting the ids and
 * np.add.reduceat took 1.3 ms.  Here it is one pass of row additions.  The rows are added
 * in index order, as np.add.at does, so the sums (and the results) are the same. */
#include "internal.h"

#define FRNN_DEFINE_SCATTER_ADD(REAL, SFX)                                                     \
    int frnn_scatter_add_rows_##SFX(ptrdiff_t n, ptrdiff_t dim, const ptrdiff_t *ids,         \
                                    const REAL *rows, ptrdiff_t ld_rows, REAL *table,         \
                                    ptrdiff_t table_rows, ptrdiff_t ld_table) {               \
        if (n < 0 || dim < 0 || table_rows < 0) return FRNN_EINVAL;                           \
        if (n == 0 || dim == 0) return FRNN_OK;                                               \
        if (!ids || !rows || !table || ld_rows < dim || ld_table < dim) return FRNN_EINVAL;   \
        /* every id first: a bad one leaves the table untouched */                            \
        for (ptrdiff_t i = 0; i < n; ++i)                                                     \
            if (ids[i] < 0 || ids[i] >= table_rows) return FRNN_EINVAL;                       \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                   \
            REAL *FRNN_RESTRICT dst = table + ids[i] * ld_table;                              \
            const REAL *FRNN_RESTRICT src = rows + i * ld_rows;                               \
            for (ptrdiff_t j = 0; j < dim; ++j) dst[j] += src[j];                             \
        }                                                                                     \
        return FRNN_OK;                                                                       \
    }

FRNN_DEFINE_SCATTER_ADD(float, f32)
FRNN_DEFINE_SCATTER_ADD(double, f64)
#undef FRNN_DEFINE_SCATTER_ADD
