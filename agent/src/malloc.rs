//! glibc allocator settings for a long-running agent with a handful of
//! threads, and handing freed memory back to the OS.

/// Applied first thing in `main`, before any thread exists. A setting whose
/// glibc environment variable the operator set (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) is left to it.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    {
        let unset = |var: &str| std::env::var_os(var).is_none();
        // glibc gives each thread that allocates its own arena (up to 8 per
        // core); memory one thread freed is then not reused by another, and
        // the tokio workers, the pipeline and the exporter each hold some.
        if unset("MALLOC_ARENA_MAX") {
            // SAFETY: mallopt only changes allocator parameters.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
        // A fixed threshold turns off glibc's dynamic one, which after the
        // first large scrape buffer is freed serves buffers up to 32 MiB from
        // the heap, where they stay resident.
        if unset("MALLOC_MMAP_THRESHOLD_") {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
        }
        if unset("MALLOC_TRIM_THRESHOLD_") {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024) };
        }
    }
}

/// Returns free memory in every arena to the OS (after a burst of
/// temporaries: the BTF parse, a large scrape).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
