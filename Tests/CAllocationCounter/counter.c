// The allocating entry points of the C library, defined here so that the test executable's
// definitions take precedence over libc's; each counts and forwards to glibc's internal
// allocator (the same heap, so libc's free releases what they return). Sanitizer builds
// interpose malloc themselves, so there this file defines nothing.
#include "AllocationCounter.h"
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define QUILL_SANITIZED 1
#define QUILL_SANITIZER_BUILD 1
#endif
#endif
#if !defined(__linux__) || !defined(__GLIBC__)
#define QUILL_SANITIZED 1  // not glibc: no __libc_* entry points to forward to
#endif

static atomic_llong allocations;

#ifndef QUILL_SANITIZED
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);

static inline void count(void) { atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed); }

void *malloc(size_t size) { count(); return __libc_malloc(size); }
void *calloc(size_t count_, size_t size) { count(); return __libc_calloc(count_, size); }
void *realloc(void *pointer, size_t size) { count(); return __libc_realloc(pointer, size); }
void *memalign(size_t alignment, size_t size) { count(); return __libc_memalign(alignment, size); }
void *aligned_alloc(size_t alignment, size_t size) { count(); return __libc_memalign(alignment, size); }
int posix_memalign(void **result, size_t alignment, size_t size) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    count();
    void *pointer = __libc_memalign(alignment, size);
    if (!pointer) return ENOMEM;
    *result = pointer;
    return 0;
}
#endif

bool quill_allocation_counting_available(void) {
#ifdef QUILL_SANITIZED
    return false;
#else
    return true;
#endif
}

bool quill_sanitizer_build(void) {
#ifdef QUILL_SANITIZER_BUILD
    return true;
#else
    return false;
#endif
}

int64_t quill_allocation_count(void) { return atomic_load_explicit(&allocations, memory_order_relaxed); }
