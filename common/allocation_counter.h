// Counts a program's heap allocations, for the tests and benchmarks that show a hot path (a
// served request) allocates nothing once warm. It does so by replacing the global operator new
// (delete stays malloc's free), which a program may do only once: include this header from
// exactly ONE source file of a test or benchmark binary (a second one fails to link with
// duplicate definitions), never from a library.
#ifndef IPS_COMMON_ALLOCATION_COUNTER_H_
#define IPS_COMMON_ALLOCATION_COUNTER_H_

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace ips {

inline std::atomic<int64_t> g_heap_allocations{0};

// operator new calls of this process so far.
inline int64_t HeapAllocations() { return g_heap_allocations.load(std::memory_order_relaxed); }

}  // namespace ips

// GCC cannot tell that free() below matches the malloc() in this replacement operator new.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) {
  ips::g_heap_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

#endif  // IPS_COMMON_ALLOCATION_COUNTER_H_
