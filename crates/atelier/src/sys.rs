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

/// Has `handler` run when the process exits (C's `atexit`): after `main`
/// returns or `std::process::exit`, before the static destructors of the C++
/// linked in that were constructed earlier (they run in reverse order of
/// registration). Whether it was registered.
pub fn run_at_exit(handler: extern "C" fn()) -> bool {
    // SAFETY: atexit keeps a plain function pointer, valid for the whole
    // program; no data is passed. `extern "C"` makes a panic in it an abort
    // rather than an unwind into C.
    unsafe { libc::atexit(handler) == 0 }
}

/// The CPU time this process has used so far, all its threads together.
#[cfg(unix)]
pub fn process_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`, which lives across
    // the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &raw mut now) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    let (secs, nanos) = (u64::try_from(now.tv_sec), u32::try_from(now.tv_nsec));
    std::time::Duration::new(secs.unwrap_or(0), nanos.unwrap_or(0))
}

/// Drops this process's page-table entries for its own program image: the
/// executable's read-only mappings (code, constants, the relocation tables the
/// loader read) that still equal the file. Start-up runs a great deal that
/// serving never runs again (DuckDB's catalogue and function registry,
/// migrations, configuration; ADR-0021), and the kernel maps code in runs of
/// pages around each first use, so without this most of the binary stays
/// resident. The pages stay in the page cache, clean and shared, and fault back in
/// on their next use. Returns the bytes of the mappings advised.
#[cfg(target_os = "linux")]
pub fn release_program_pages() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for (start, end) in clean_program_mappings(&smaps, &exe.to_string_lossy()) {
        let len = end - start;
        // SAFETY: the range is a whole mapping the kernel listed as private, not
        // writable, backed by the program's file, and without a single
        // anonymous (copied-on-write) page: every page equals the file's bytes
        // and none can be written, so MADV_DONTNEED only removes page-table
        // entries, and the next access faults the same bytes back in from the
        // page cache. The loader's RELRO data, which it wrote before making it
        // read-only, has anonymous pages and is never chosen.
        let rc = unsafe { libc::madvise(std::ptr::without_provenance_mut(start), len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released += len;
    }
    Ok(released)
}

#[cfg(not(target_os = "linux"))]
pub fn release_program_pages() -> std::io::Result<usize> {
    Ok(0)
}

/// `struct sched_attr` as of Linux 3.14 (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

#[cfg(target_os = "linux")]
const SCHED_ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

/// The calling thread's scheduling attributes.
#[cfg(target_os = "linux")]
fn sched_attr() -> std::io::Result<SchedAttr> {
    let mut attr = SchedAttr {
        size: SCHED_ATTR_SIZE,
        ..SchedAttr::default()
    };
    // SAFETY: the kernel writes at most `SCHED_ATTR_SIZE` bytes into `attr`,
    // which is that large and lives across the call; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, SCHED_ATTR_SIZE, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr)
}

/// The calling thread's scheduling slice as the kernel reports it: the one it
/// asked for, or the default (zero on kernels before 6.12).
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn thread_slice() -> std::io::Result<std::time::Duration> {
    Ok(std::time::Duration::from_nanos(sched_attr()?.runtime))
}

/// Asks the kernel to schedule the calling thread in slices of `slice` instead of
/// its default (0.7 ms times 1 + log2 of the cores, counting at most 8: 1.4
/// ms on 2, 2.8 ms from 8). Since Linux 6.12 the fair scheduler (EEVDF) lets
/// a thread that wakes with a shorter slice than the running one's preempt it
/// (`PREEMPT_SHORT`), and since 6.17 a running thread is protected from that
/// for at most the shortest slice queued beside it; between equal slices, a
/// woken thread that does not win at its wakeup waits for the running one's
/// slice to end, which on a kernel without high-resolution ticks is noticed
/// only at the next tick (4 ms at 250 Hz). So a thread that works in short
/// bursts and then waits (an async worker) should have a short slice, and one
/// that works in long stretches (a database write, a password hash) a longer
/// one than anything that may wake beside it. The kernel clamps the slice to
/// 0.1–100 ms; `Duration::ZERO` restores its default. Kernels before 6.12
/// accept and ignore it. Threads with another policy (real-time, idle) are left
/// as they are. A new thread inherits the slice of the thread that started it,
/// and keeps it through a change of policy or niceness.
#[cfg(target_os = "linux")]
pub fn set_thread_slice(slice: std::time::Duration) -> std::io::Result<()> {
    let mut attr = sched_attr()?;
    if !matches!(attr.policy as i32, libc::SCHED_OTHER | libc::SCHED_BATCH) {
        return Ok(());
    }
    attr.size = SCHED_ATTR_SIZE;
    attr.flags = 0;
    attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: the kernel reads `attr.size` bytes from `attr`, which holds them,
    // during the call; policy and nice are the thread's own, read above.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub fn set_thread_slice(_slice: std::time::Duration) -> std::io::Result<()> {
    Ok(())
}

/// The address ranges, in a `/proc/PID/smaps` listing, of `exe`'s private
/// read-only mappings (`r--p`, `r-xp`) that hold no anonymous page. Each mapping
/// is a header line (`start-end perms offset dev inode path`) followed by
/// `Field: value` lines.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn clean_program_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut chosen = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            if let Some(range) = current.take()
                && anonymous.trim() == "0 kB"
            {
                chosen.push(range);
            }
        } else if is_mapping_header(line) {
            current = program_mapping(line, exe);
        }
    }
    chosen
}

/// Whether a smaps line starts a mapping (`start-end perms …`) rather than
/// giving one of its fields (`Name: value`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn is_mapping_header(line: &str) -> bool {
    line.split(' ')
        .next()
        .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
}

/// The range of a smaps header line if it is a private read-only mapping of `exe`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn program_mapping(header: &str, exe: &str) -> Option<(usize, usize)> {
    let mut fields = header.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    // offset, device and inode; the path follows after padding.
    let path = fields.nth(3)?.trim_start();
    if !matches!(perms, "r--p" | "r-xp") || path != exe {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (start < end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::clean_program_mappings;

    /// A mapping's header and the fields the choice reads.
    fn mapping(header: &str, anonymous_kib: u32) -> String {
        format!(
            "{header}\nSize:               2048 kB\nRss:                 512 kB\nAnonymous:       {anonymous_kib} kB\nVmFlags: rd mr mw me\n"
        )
    }

    #[test]
    fn only_the_programs_clean_read_only_mappings_are_chosen() {
        let exe = "/opt/atelier/bin/atelier";
        let smaps = [
            mapping("55d0c0a00000-55d0c1c00000 r--p 00000000 fd:01 1234                       /opt/atelier/bin/atelier", 0),
            mapping("55d0c1c00000-55d0c4800000 r-xp 01200000 fd:01 1234                       /opt/atelier/bin/atelier", 0),
            // RELRO: written by the loader, then made read-only.
            mapping("55d0c4800000-55d0c4a00000 r--p 03e00000 fd:01 1234                       /opt/atelier/bin/atelier", 1296),
            mapping("55d0c4a00000-55d0c4a10000 rw-p 04000000 fd:01 1234                       /opt/atelier/bin/atelier", 0),
            mapping("55d0c5000000-55d0c5100000 rw-p 00000000 00:00 0                          [heap]", 0),
            mapping("7f1e2a000000-7f1e2a180000 r-xp 00026000 fd:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6", 0),
            mapping("7f1e2b000000-7f1e2b001000 r-xp 00000000 fd:01 77                         /opt/atelier/bin/atelier-old", 0),
            mapping("7ffd1e9f0000-7ffd1e9f2000 r-xp 00000000 00:00 0                          [vdso]", 0),
        ]
        .concat();
        assert_eq!(
            clean_program_mappings(&smaps, exe),
            vec![
                (0x55d0_c0a0_0000, 0x55d0_c1c0_0000),
                (0x55d0_c1c0_0000, 0x55d0_c480_0000)
            ]
        );
        // A header without its fields chooses nothing.
        let header_only = "55d0c1c00000-55d0c4800000 r-xp 01200000 fd:01 1234   /opt/atelier/bin/atelier\n";
        assert!(clean_program_mappings(header_only, exe).is_empty());
        assert!(clean_program_mappings("garbage\n\n", exe).is_empty());
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    /// Anonymous resident memory of this process (the heap among it), from
    /// /proc: code pages released by a test beside this one do not count.
    fn resident_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let anon = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .expect("RssAnon");
        kib_of(anon) * 1024
    }

    /// A /proc value given in kB (`   1234 kB`).
    #[cfg(target_os = "linux")]
    fn kib_of(value: &str) -> u64 {
        value
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .expect("kB value")
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
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

    #[cfg(target_os = "linux")]
    fn thread_slice() -> std::time::Duration {
        super::thread_slice().expect("sched_getattr")
    }

    #[cfg(target_os = "linux")]
    /// The slice is the thread's own: a thread beside it keeps the default.
    #[test]
    fn a_thread_can_ask_for_a_short_slice() {
        let default = std::thread::spawn(thread_slice).join().expect("thread");
        let short = std::time::Duration::from_micros(200);
        let (set, restored) = std::thread::spawn(move || {
            super::set_thread_slice(short).expect("sched_setattr");
            let set = thread_slice();
            super::set_thread_slice(std::time::Duration::ZERO).expect("sched_setattr");
            (set, thread_slice())
        })
        .join()
        .expect("thread");
        // Kernels before 6.12 report no slice for ordinary threads at all.
        if !default.is_zero() {
            assert_eq!(set, short);
            assert_ne!(default, short);
        }
        assert_eq!(restored, default);
        assert_eq!(std::thread::spawn(thread_slice).join().expect("thread"), default);
    }

    #[cfg(target_os = "linux")]
    /// Resident kilobytes of the mappings `release_program_pages` may choose in
    /// this test binary, from /proc/self/smaps.
    fn resident_program_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut in_program = false;
        let mut kib = 0;
        for line in smaps.lines() {
            if super::is_mapping_header(line) {
                in_program = super::program_mapping(line, &exe.to_string_lossy()).is_some();
            } else if in_program && let Some(rss) = line.strip_prefix("Rss:") {
                kib += kib_of(rss);
            }
        }
        kib
    }

    #[cfg(target_os = "linux")]
    /// The code run so far stops being resident, and the program runs on.
    #[test]
    fn released_code_pages_leave_the_resident_set() {
        let before = resident_program_kib();
        assert!(before > 0, "no resident code found");
        let released = super::release_program_pages().expect("madvise");
        let after = resident_program_kib();
        assert!(released > 0, "no program mapping found");
        // Threads of other tests fault some of their code back in meanwhile.
        assert!(after < before / 2, "resident code {before} → {after} KiB");
    }
}
