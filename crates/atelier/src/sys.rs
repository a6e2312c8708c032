//! Operating-system calls that no safe crate offers, each behind a safe function.
//! The only module of atelier allowed `unsafe` (ADR-0020): keep every call here
//! free of pointers it does not own for the call.
#![allow(unsafe_code)]

/// Gives the heap's free pages back to the operating system (glibc's
/// `malloc_trim(0)`): returns whether any were. A no-op off glibc, whose other
/// allocators do not hold on to freed pages the same way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_heap() -> bool {
    // SAFETY: malloc_trim takes no pointer and is MT-safe (it locks each arena in turn).
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_heap() -> bool {
    false
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Resident memory of this process, from /proc (statm's second field, in pages).
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .expect("field")
            .parse()
            .expect("number");
        pages * 4096
    }

    /// Many small blocks freed on a thread of their own stay resident in that
    /// thread's arena until trimmed.
    #[test]
    fn trimming_returns_freed_pages() {
        std::thread::spawn(|| {
            // 128 MiB in 16 KiB blocks: below glibc's mmap threshold, so in the arena.
            let mut blocks: Vec<Vec<u8>> = (0..8192).map(|_| vec![1u8; 16 * 1024]).collect();
            // Keep every 64th: the arena cannot shrink from its top alone.
            let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(64).map(std::mem::take).collect();
            drop(blocks);
            let before = resident_bytes();
            assert!(super::trim_heap(), "nothing was trimmed");
            let after = resident_bytes();
            // Half of it, as tests running beside this one allocate too.
            assert!(
                before.saturating_sub(after) > 64 * 1024 * 1024,
                "resident {before} → {after} bytes"
            );
            drop(kept);
        })
        .join()
        .expect("thread");
    }
}
