//! Drops the shim's mappings of start-up code once its container runs.
//!
//! The shim is the whole kboot binary: creating a container runs libcontainer,
//! serde and the CLI, and the kernel maps every page it touched (plus its
//! fault-around neighbours) into the shim for good, about 9 MB of RSS that the
//! shim's poll loop never uses again (bench/README.md, `## Containers`). Those
//! pages are clean copies of files (the kboot binary, libc): unmapping them
//! with `MADV_DONTNEED` frees nothing in the page cache, which the supervisor
//! and the other shims share, but takes them out of this shim's RSS and page
//! tables; the few the loop needs fault back in from the page cache.
//!
//! Only mappings that cannot hold private data are dropped: read-only, backed
//! by a file, and with no anonymous (copy-on-write) page. The relocated
//! `.data.rel.ro` of the binary is read-only too but made of anonymous pages
//! after relocation: dropping it would bring back the unrelocated file bytes,
//! so the `Anonymous: 0 kB` test is what keeps this safe. An upgrade of kboot or
//! libc while shims run does not change what faults back in: package managers
//! replace files by rename (the old inode stays while mapped), and a running
//! executable cannot be written in place (ETXTBSY).

/// One mapping of `/proc/self/smaps` that may be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Droppable {
    start: usize,
    len: usize,
}

/// Unmaps the clean, read-only file pages of this process; returns how many
/// bytes of mappings were dropped. Best effort: a failure leaves RSS as it was.
pub fn drop_clean_file_pages() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    for m in droppable(&smaps) {
        // SAFETY: the range is a whole mapping of this process that is read-only,
        // file-backed and holds no anonymous page (see `droppable`), so MADV_DONTNEED
        // only removes page-table entries that refault with identical contents from
        // the file; no Rust object lives in it. The shim is single-threaded, so the
        // mapping cannot change between reading smaps and this call.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, m.len, libc::MADV_DONTNEED) };
        if rc == 0 {
            dropped += m.len;
        }
    }
    dropped
}

/// Returns the free pages of the heap to the kernel (`malloc_trim`): the container's
/// start (libcontainer, serde, the spec) leaves ~140 KB of freed heap that the poll loop
/// never reuses, private to each shim, and a node runs 110 of them (bench/README.md,
/// `## Density`: a shim's Pss 1.39 → 1.32 MB).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands free memory of glibc's heap back to the kernel; no
    // allocation is moved or freed by it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The mappings of an smaps text that are read-only, backed by a file (path
/// starting with `/`) and have no anonymous page.
fn droppable(smaps: &str) -> Vec<Droppable> {
    let mut out = Vec::new();
    let mut current: Option<Droppable> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first
            .split_once('-')
            .and_then(|(s, e)| Some((usize::from_str_radix(s, 16).ok()?, usize::from_str_radix(e, 16).ok()?)))
        {
            // A mapping header: `start-end perms offset dev inode [path]`.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let read_only = perms.len() == 4 && perms.as_bytes()[1] == b'-' && perms.ends_with('p');
            current = (read_only && path.starts_with('/') && end > start).then_some(Droppable {
                start,
                len: end - start,
            });
            continue;
        }
        if first == "Anonymous:" {
            let anon_kb: u64 = fields.next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
            if let Some(m) = current.take() {
                if anon_kb == 0 {
                    out.push(m);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0400000 r--p 00000000 08:01 123 /usr/bin/kboot
Rss:                 100 kB
Anonymous:             0 kB
55d0a0400000-55d0a1000000 r-xp 00400000 08:01 123 /usr/bin/kboot
Anonymous:             0 kB
55d0a1000000-55d0a1100000 r--p 01000000 08:01 123 /usr/bin/kboot
Anonymous:           716 kB
55d0a1100000-55d0a1110000 rw-p 01100000 08:01 123 /usr/bin/kboot
Anonymous:             0 kB
55d0a2000000-55d0a2100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           224 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Anonymous:             0 kB
7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f1000000000-7f1000100000 r-xp 00028000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
VmFlags: rd ex mr mw me sd
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_dropped() {
        let got = droppable(SMAPS);
        assert_eq!(
            got,
            vec![
                Droppable {
                    start: 0x55d0a0000000,
                    len: 0x400000
                },
                Droppable {
                    start: 0x55d0a0400000,
                    len: 0xc00000
                },
                Droppable {
                    start: 0x7f1000000000,
                    len: 0x100000
                },
            ],
            "the relocated read-only part, writable, anonymous and vdso mappings must stay"
        );
    }

    fn rss_file_kb() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn dropping_lowers_rss_and_code_keeps_working() {
        let before = rss_file_kb();
        assert!(
            drop_clean_file_pages() > 0,
            "the test binary has read-only file mappings"
        );
        let after = rss_file_kb();
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // Code, constants and relocated data (vtables, formatting) still work.
        let v: serde_json::Value = serde_json::from_str(r#"{"a": [1, 2.5, "x"]}"#).unwrap();
        assert_eq!(format!("{v}"), r#"{"a":[1,2.5,"x"]}"#);
    }
}
