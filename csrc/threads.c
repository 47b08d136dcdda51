/* Process-wide thread count for the kernels' own parallel loops (BLAS threads are set by
 * the Python layer through threadpoolctl). */
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

static _Atomic int frnn_requested_threads = 0; /* 0 = one per core */

void frnn_set_num_threads(int n) { frnn_requested_threads = n > 0 ? n : 0; }

int frnn_get_num_threads(void) {
#ifdef _OPENMP
    int n = frnn_requested_threads;
    return n > 0 ? n : omp_get_num_procs();
#else
    return 1;
#endif
}

int frnn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
