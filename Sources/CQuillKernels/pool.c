// A persistent thread pool for the kernels. Workers spin briefly after a job (the token
// loop issues one job per weight matrix, microseconds apart) and then sleep on a condition
// variable so an idle pool costs no CPU. The calling thread takes part in every job.
//
// Every wait yields the processor regularly: when the machine is oversubscribed (two
// generators, or a build, on the same cores) a pure spin burns the time slice the thread it
// waits for needs, and decoding collapsed by 100x that way. sched_yield returns at once
// when nothing else is runnable, so an idle machine keeps the spin's latency.
#include "QuillKernels.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() sched_yield()
#endif

enum { SPIN_ITERATIONS = 20000, YIELD_EVERY = 64, CALLER_SPINS_BEFORE_YIELDING = 1000 };

struct quill_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t run_lock;  // serializes quill_pool_run callers
    pthread_mutex_t wake_lock;
    pthread_cond_t wake;
    atomic_ulong generation;   // bumped once per job
    atomic_long next_task;
    atomic_int busy_workers;
    atomic_int stopping;
    atomic_int started_workers;  // hands out worker indices 1, 2, …
    // The current job; written before generation is bumped, read after it is seen.
    quill_task_fn fn;
    void *context;
    int64_t n_tasks;
};

// The pool whose job this thread is running, so a nested run on it executes inline
// instead of deadlocking on run_lock.
static _Thread_local const struct quill_pool *running_pool = NULL;
// This thread's index in the job it is running (the caller 0, workers from 1); 0 outside
// any job. Set per job, so a worker of one pool that calls another pool's job inline or as
// its caller gets an index valid in that pool.
static _Thread_local int thread_index = 0;

int quill_pool_thread_index(void) { return thread_index; }

static void run_tasks(struct quill_pool *pool, int index) {
    const struct quill_pool *outer = running_pool;
    const int outer_index = thread_index;
    running_pool = pool;
    thread_index = index;
    for (;;) {
        const int64_t task = atomic_fetch_add(&pool->next_task, 1);
        if (task >= pool->n_tasks) break;
        pool->fn(pool->context, task);
    }
    running_pool = outer;
    thread_index = outer_index;
}

static void *worker_main(void *arg) {
    struct quill_pool *pool = arg;
    const int index = atomic_fetch_add(&pool->started_workers, 1) + 1;
    unsigned long seen = 0;
    for (;;) {
        unsigned long now = atomic_load(&pool->generation);
        for (int spin = 0; now == seen && spin < SPIN_ITERATIONS && !atomic_load(&pool->stopping); spin++) {
            if (spin % YIELD_EVERY == YIELD_EVERY - 1) sched_yield(); else CPU_RELAX();
            now = atomic_load(&pool->generation);
        }
        if (now == seen) {
            pthread_mutex_lock(&pool->wake_lock);
            while ((now = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stopping))
                pthread_cond_wait(&pool->wake, &pool->wake_lock);
            pthread_mutex_unlock(&pool->wake_lock);
        }
        if (atomic_load(&pool->stopping)) return NULL;
        seen = now;
        run_tasks(pool, index);
        atomic_fetch_sub(&pool->busy_workers, 1);
    }
}

quill_pool *quill_pool_create(int n_threads) {
    if (n_threads < 1) return NULL;
    struct quill_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->run_lock, NULL);
    pthread_mutex_init(&pool->wake_lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    atomic_init(&pool->generation, 0);
    atomic_init(&pool->next_task, 0);
    atomic_init(&pool->busy_workers, 0);
    atomic_init(&pool->stopping, 0);
    atomic_init(&pool->started_workers, 0);
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!pool->threads) { free(pool); return NULL; }
    for (int i = 0; i < n_threads - 1; i++) {
        if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0) {
            pool->n_threads = i + 1;  // destroy joins only the workers that started
            quill_pool_destroy(pool);
            return NULL;
        }
    }
    return pool;
}

void quill_pool_destroy(quill_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->wake_lock);
    atomic_store(&pool->stopping, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->wake_lock);
    for (int i = 0; i < pool->n_threads - 1; i++) pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->wake_lock);
    pthread_mutex_destroy(&pool->run_lock);
    free(pool->threads);
    free(pool);
}

int quill_pool_threads(const quill_pool *pool) { return pool->n_threads; }

void quill_pool_run(quill_pool *pool, quill_task_fn fn, void *context, int64_t n_tasks) {
    if (n_tasks <= 0) return;
    if (running_pool == pool) {
        for (int64_t i = 0; i < n_tasks; i++) fn(context, i);
        return;
    }
    if (pool->n_threads == 1 || n_tasks == 1) {  // touches no shared state: no lock
        const int outer_index = thread_index;
        thread_index = 0;
        for (int64_t i = 0; i < n_tasks; i++) fn(context, i);
        thread_index = outer_index;
        return;
    }
    pthread_mutex_lock(&pool->run_lock);
    pool->fn = fn;
    pool->context = context;
    pool->n_tasks = n_tasks;
    atomic_store(&pool->next_task, 0);
    atomic_store(&pool->busy_workers, pool->n_threads - 1);
    pthread_mutex_lock(&pool->wake_lock);
    atomic_fetch_add(&pool->generation, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->wake_lock);
    run_tasks(pool, 0);
    // Every worker must leave the job before the caller's context goes out of scope.
    for (int spin = 0; atomic_load(&pool->busy_workers) > 0; spin++) {
        if (spin < CALLER_SPINS_BEFORE_YIELDING) CPU_RELAX(); else sched_yield();
    }
    pthread_mutex_unlock(&pool->run_lock);
}
