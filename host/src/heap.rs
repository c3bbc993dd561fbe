//! Gives the allocator's freed memory back to the operating system.
//!
//! Compiling a component with cranelift allocates tens of MiB, on several
//! threads (parallel compilation), and frees it all at the end. glibc keeps
//! what a thread freed in that thread's arena for the next allocation, so a
//! node that compiled at start idled at about twice the RSS of one that
//! loaded the same code from its cache. After a compile, `malloc_trim`
//! returns every arena's free pages; it costs well under a millisecond
//! against a compile's tens of milliseconds.

/// Returns the heap's free pages to the OS, where the allocator can (glibc).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    trim();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's
    // own arenas, under their locks; any thread may call it at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
