// Counts heap allocations (malloc and its kin) so a test can check that a loop allocates
// nothing. Test support only; not part of any product.
#pragma once
#include <stdbool.h>
#include <stdint.h>

/// True when this build counts (sanitizer builds keep their own allocator and do not).
bool quill_allocation_counting_available(void);
/// True in a ThreadSanitizer or AddressSanitizer build, whose shadow memory inflates the
/// resident size.
bool quill_sanitizer_build(void);
/// Allocations in this process so far, on every thread.
int64_t quill_allocation_count(void);
