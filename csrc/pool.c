/* The buffer pool: every kernel allocation (frnn_alloc) and every large array the Python
 * glue hands out (outputs, training caches, gradients) comes from here.
 *
 * Why: a training step allocates tens to hundreds of MB (the gate cache, dZ of every step,
 * the gradients) and frees them before the next step.  From the C library, blocks that
 * large are fresh mappings each time: every page faults and is zeroed by the kernel on its
 * first touch, and is unmapped again on free.  That took 15% of an LSTM training forward at
 * B=8, H=512 (clear_page and the fault path in perf); keeping freed blocks for reuse made
 * whole training steps 1.06-1.11x faster (LSTM, GRU, SimpleRNN, B=8-128, measured with the
 * C library told to keep its memory instead).  Blocks of FRNN_POOL_MIN_BYTES and more are
 * kept after free, up to a limit of retained bytes (frnn_set_pool_limit; the least recently
 * freed go back to the system first), and handed out again for requests of about half
 * their size or more.  Smaller blocks go straight back to the C library, which recycles those
 * itself.
 *
 * Every block starts with a header of FRNN_POOL_HEADER bytes (its usable size), so
 * frnn_free needs only the pointer.  Pointers are 64-byte aligned; blocks of 2 MiB and more
 * are 2 MiB-aligned and advised into transparent huge pages (one fault per 2 MiB, as NumPy
 * does for its arrays).  Thread-safe (one mutex); fork-safe (the mutex is held across
 * fork, so the child never inherits it locked).  ASan builds keep nothing, so the sanitizer
 * still sees every use after free. */
#include "internal.h"

#include <pthread.h>
#include <stdint.h>

#define FRNN_POOL_HEADER ((size_t)64)
#define FRNN_POOL_MAGIC 0x6672726eu /* "frrn": catches frees of foreign pointers */
#define FRNN_POOL_SLOTS 64

#if defined(__SANITIZE_ADDRESS__)
#define FRNN_POOL_DEFAULT_LIMIT ((size_t)0)
#else
#define FRNN_POOL_DEFAULT_LIMIT ((size_t)1 << 30)
#endif

typedef struct {
    size_t capacity; /* usable bytes after the header */
    uint32_t magic;
} frnn_block_header;

typedef struct {
    char *user;          /* the pointer frnn_alloc returned */
    size_t capacity;
    unsigned long long freed_at; /* for least-recently-freed eviction */
} frnn_free_block;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t pool_fork_once = PTHREAD_ONCE_INIT;
static frnn_free_block pool_blocks[FRNN_POOL_SLOTS];
static int pool_count;
static size_t pool_retained, pool_limit = FRNN_POOL_DEFAULT_LIMIT;
static unsigned long long pool_clock;

static void pool_lock_for_fork(void) { pthread_mutex_lock(&pool_lock); }
static void pool_unlock_after_fork(void) { pthread_mutex_unlock(&pool_lock); }
static void pool_register_fork_handlers(void) {
    pthread_atfork(pool_lock_for_fork, pool_unlock_after_fork, pool_unlock_after_fork);
}
static void pool_acquire(void) {
    pthread_once(&pool_fork_once, pool_register_fork_handlers);
    pthread_mutex_lock(&pool_lock);
}

static frnn_block_header *header_of(void *user) {
    return (frnn_block_header *)((char *)user - FRNN_POOL_HEADER);
}

static void release_block(char *user) { free(user - FRNN_POOL_HEADER); }

/* Removes slot i from the free list (caller holds the lock); returns its pointer. */
static char *take_slot(int i) {
    char *user = pool_blocks[i].user;
    pool_retained -= pool_blocks[i].capacity;
    pool_blocks[i] = pool_blocks[--pool_count];
    return user;
}

/* The least recently freed slot (caller holds the lock; pool_count > 0). */
static int oldest_slot(void) {
    int oldest = 0;
    for (int i = 1; i < pool_count; ++i)
        if (pool_blocks[i].freed_at < pool_blocks[oldest].freed_at) oldest = i;
    return oldest;
}

static char *new_block(size_t bytes) {
    const size_t align = bytes >= FRNN_HUGE_ALLOC_BYTES ? FRNN_HUGE_PAGE : 64;
    if (bytes > SIZE_MAX - FRNN_POOL_HEADER - align) return NULL;
    const size_t total = (bytes + FRNN_POOL_HEADER + align - 1) & ~(align - 1);
    char *base = aligned_alloc(align, total);
    if (!base) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (align == FRNN_HUGE_PAGE) madvise(base, total, MADV_HUGEPAGE); /* advice only */
#endif
    frnn_block_header *h = (frnn_block_header *)base;
    h->capacity = total - FRNN_POOL_HEADER;
    h->magic = FRNN_POOL_MAGIC;
    return base + FRNN_POOL_HEADER;
}

void *frnn_alloc(size_t count, size_t size) {
    if (count != 0 && size > SIZE_MAX / count) return NULL;
    size_t bytes = count * size;
    if (bytes == 0) bytes = 64;
    if (bytes >= FRNN_POOL_MIN_BYTES) {
        char *reused = NULL;
        pool_acquire();
        /* the smallest kept block that fits and wastes at most the need plus one huge
         * page (blocks are whole huge pages, so a 2 MiB need has a 4 MiB block) */
        int best = -1;
        for (int i = 0; i < pool_count; ++i) {
            const size_t c = pool_blocks[i].capacity;
            if (c >= bytes && c - bytes <= bytes + FRNN_HUGE_PAGE
                && (best < 0 || c < pool_blocks[best].capacity))
                best = i;
        }
        if (best >= 0) reused = take_slot(best);
        pthread_mutex_unlock(&pool_lock);
        if (reused) return reused;
    }
    return new_block(bytes);
}

void frnn_free(void *ptr) {
    if (!ptr) return;
    frnn_block_header *h = header_of(ptr);
    if (h->magic != FRNN_POOL_MAGIC) abort(); /* not from frnn_alloc: a bug, never data */
    if (h->capacity < FRNN_POOL_MIN_BYTES) {
        release_block(ptr);
        return;
    }
    char *evicted[FRNN_POOL_SLOTS + 1];
    int n_evicted = 0;
    pool_acquire();
    if (h->capacity > pool_limit) {
        evicted[n_evicted++] = ptr;
    } else {
        if (pool_count == FRNN_POOL_SLOTS) evicted[n_evicted++] = take_slot(oldest_slot());
        pool_blocks[pool_count].user = ptr;
        pool_blocks[pool_count].capacity = h->capacity;
        pool_blocks[pool_count].freed_at = ++pool_clock;
        ++pool_count;
        pool_retained += h->capacity;
        while (pool_retained > pool_limit) evicted[n_evicted++] = take_slot(oldest_slot());
    }
    pthread_mutex_unlock(&pool_lock);
    for (int i = 0; i < n_evicted; ++i) release_block(evicted[i]); /* outside the lock */
}

void frnn_set_pool_limit(size_t bytes) {
    char *evicted[FRNN_POOL_SLOTS];
    int n_evicted = 0;
    pool_acquire();
    pool_limit = bytes;
    while (pool_retained > pool_limit) evicted[n_evicted++] = take_slot(oldest_slot());
    pthread_mutex_unlock(&pool_lock);
    for (int i = 0; i < n_evicted; ++i) release_block(evicted[i]);
}

size_t frnn_pool_limit(void) {
    pool_acquire();
    size_t limit = pool_limit;
    pthread_mutex_unlock(&pool_lock);
    return limit;
}

size_t frnn_pool_retained(void) {
    pool_acquire();
    size_t retained = pool_retained;
    pthread_mutex_unlock(&pool_lock);
    return retained;
}
