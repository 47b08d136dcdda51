/* Process-wide thread count for the kernels' own parallel loops (BLAS threads are set by
 * the Python layer through threadpoolctl). */
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* 0 = one per core.  The default is 1: on the 2-vCPU machines measured, splitting the time
 * loop over two threads with a barrier per step was slower at every size tried (see
 * FRNN_PARALLEL_MIN_MACS); fusedrnn.set_num_threads(n) opts in. */
static _Atomic int frnn_requested_threads = 1;

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
