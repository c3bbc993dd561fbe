//! The process's allocator, and giving its freed memory back to the OS.
//!
//! **mimalloc** (ADR 0011). On the warm MQTT path, glibc's malloc and free
//! took a quarter of all CPU: each event allocates blocks of a few KiB on one
//! thread that another thread frees, which miss glibc's per-thread cache and
//! take its locked slow paths. mimalloc's free lists per page serve those
//! without a lock (BENCHMARKS.md: +49% warm events/s, half the p99).
//!
//! Its arenas are committed eagerly by default where the OS overcommits;
//! pages touched once then stay resident, and the demo node idled at 50 MiB
//! instead of 23. Committing on demand instead keeps the idle footprint; the
//! option has to be set before the first allocation, which Rust's runtime
//! makes before `main`, so a constructor in `.init_array` sets it.
//!
//! **Returning memory.** Compiling a component with cranelift allocates
//! tens of MiB on several threads and frees it all at the end. After a
//! compile, [`release_free_memory`] has mimalloc purge its free pages now
//! (instead of after its purge delay, or never for an idle thread's heap)
//! and glibc trim its arenas, which C libraries (onnxruntime) still use.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc 3's `mi_option_t` (mimalloc.h),
/// which the Rust binding does not name.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static CONFIGURE: extern "C" fn() = configure;

/// Runs before `main` (and before Rust's runtime allocates); a plain C ABI
/// function with no arguments, as `.init_array` entries are called.
#[cfg(target_os = "linux")]
extern "C" fn configure() {
    commit_on_demand();
}

/// Arenas commit their pages on first use instead of eagerly.
#[allow(unsafe_code)]
fn commit_on_demand() {
    // SAFETY: mi_option_set writes one option word; mimalloc reads it when
    // it reserves an arena, and it takes no pointers.
    unsafe { libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0) }
}

/// Returns the heap's free pages to the OS, in both allocators. Call it
/// after a compile: it visits the compiler's threads, which hold the pages
/// they freed in their own heaps.
pub fn release_free_memory() {
    rayon::broadcast(|_| collect());
    collect();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim();
}

/// Purges the calling thread's mimalloc heap and, forced, the free pages
/// of every arena.
#[allow(unsafe_code)]
fn collect() {
    // SAFETY: mi_collect takes no pointers and touches only mimalloc's own
    // structures of the calling thread and the shared arenas (under locks).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // arenas, under their locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    /// The constructor ran (this test binary links it as `brink` does):
    /// without it, an idle node holds every page it ever touched.
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn arenas_commit_on_demand_from_the_first_allocation() {
        // SAFETY: reads one option word.
        let eager = unsafe { libmimalloc_sys::mi_option_get(super::ARENA_EAGER_COMMIT) };
        assert_eq!(eager, 0, "the .init_array constructor did not run");
    }
}
