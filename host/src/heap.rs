//! The process's allocator, and giving its freed memory back to the OS.
//!
//! **mimalloc** (ADR 0011). On the warm MQTT path, glibc's malloc and free
//! took a quarter of all CPU: each event allocates blocks of a few KiB on one
//! thread that another thread frees, which miss glibc's per-thread cache and
//! take its locked slow paths. mimalloc's free lists per page serve those
//! without a lock (BENCHMARKS.md: warm medians of 37–43k events/s against
//! 30–35k, and the p99 at 10k/s within 5 ms).
//!
//! Where the OS overcommits, mimalloc commits its arenas eagerly and asks
//! for transparent huge pages on them; every 2 MiB page it touched then
//! stayed resident, and the demo node idled at 50 MiB instead of 23. With
//! huge pages off (`mi_option_allow_thp`, which sets `PR_SET_THP_DISABLE`
//! for the process) it idles as with glibc and keeps the eager commit,
//! which was faster than committing on demand (BENCHMARKS.md). mimalloc
//! reads the option in its own constructor, so ours runs just before it.
//!
//! **Returning memory.** Compiling a component with cranelift allocates
//! tens of MiB on several threads and frees it all at the end. After a
//! compile, [`release_free_memory`] has mimalloc purge its free pages now
//! (instead of after its purge delay, or never for an idle thread's heap)
//! and glibc trim its arenas, which C libraries (onnxruntime) still use.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_allow_thp` in mimalloc 3's `mi_option_t` (mimalloc.h), which
/// the Rust binding does not name.
const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;

/// Priority 100: before mimalloc's own constructor (101), which reads the
/// option while it sets up; `.init_array.N` entries run in ascending N,
/// all before Rust's runtime and `main`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array.00100")]
static CONFIGURE: extern "C" fn() = configure;

/// A plain C ABI function with no arguments, as `.init_array` entries are
/// called.
#[cfg(target_os = "linux")]
extern "C" fn configure() {
    no_huge_pages();
}

/// No transparent huge pages unless `MIMALLOC_ALLOW_THP` says otherwise
/// (mimalloc reads the environment at the option's first use, after this).
#[allow(unsafe_code)]
fn no_huge_pages() {
    // SAFETY: mi_option_set_default writes one option word and takes no
    // pointers; mimalloc has not read it yet.
    unsafe { libmimalloc_sys::mi_option_set_default(ALLOW_THP, 0) }
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
    /// The constructor ran before mimalloc set itself up (this test binary
    /// links it as `brink` does): otherwise every huge page mimalloc
    /// touched stays resident, and an idle node doubles its RSS.
    #[test]
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn huge_pages_are_off_before_the_first_allocation() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return; // the operator's choice wins, by design
        }
        // SAFETY: reads one option word.
        let allowed = unsafe { libmimalloc_sys::mi_option_get(super::ALLOW_THP) };
        assert_eq!(allowed, 0, "the .init_array constructor did not run");
        // SAFETY: PR_GET_THP_DISABLE reads a flag of this process.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1, "mimalloc set up before the constructor ran");
    }
}
