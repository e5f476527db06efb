//! `/proc/self/mountinfo`, split into fields by `procfs`. procfs leaves the
//! kernel's octal escapes in mount points (`\040` for a space), so
//! [`parse`] decodes them: a mount point here is the path as `mount` took it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

pub use procfs::process::{MountInfo, MountOptFields};

/// Reads this process's mount table.
pub fn read() -> std::io::Result<Vec<MountInfo>> {
    std::fs::read_to_string("/proc/self/mountinfo").map(|text| parse(&text))
}

/// The mounts of a mountinfo text, in its order (the later of two mounts at one
/// point is on top). A line procfs cannot read is skipped.
pub fn parse(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| MountInfo::from_line(line).ok())
        .map(|mut m| {
            m.mount_point = unescape(&m.mount_point.as_os_str().to_string_lossy());
            m
        })
        .collect()
}

/// True when the mount propagates mount events to its peers (`shared:N`).
pub fn is_shared(m: &MountInfo) -> bool {
    m.opt_fields.iter().any(|o| matches!(o, MountOptFields::Shared(_)))
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |c: &u8| (b'0'..=b'7').contains(c);
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..=i + 3].iter().all(octal) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 253:0 / / rw,relatime - ext4 /dev/vda rw
90 27 253:0 /var/lib/k /var/lib/k rw,relatime shared:5 - ext4 /dev/vda rw
91 27 253:0 /a\\040b /a\\040b\\134c rw,relatime - ext4 /dev/vda rw
92 27 0:50 / /x rw - overlay overlay rw,lowerdir=/r/rootfs/aa:/r/rootfs/bb,upperdir=/u,workdir=/w
not a mountinfo line
";

    #[test]
    fn parse_decodes_mount_points_and_reads_propagation_and_options() {
        let mounts = parse(INFO);
        let points: Vec<_> = mounts.iter().map(|m| m.mount_point.display().to_string()).collect();
        assert_eq!(points, ["/proc", "/", "/var/lib/k", "/a b\\c", "/x"]);
        assert!(is_shared(&mounts[2]) && !is_shared(&mounts[1]));
        assert_eq!(mounts[4].fs_type, "overlay");
        assert_eq!(
            mounts[4].super_options.get("lowerdir"),
            Some(&Some("/r/rootfs/aa:/r/rootfs/bb".to_string()))
        );
    }

    #[test]
    fn unescape_decodes_an_escape_at_the_very_end() {
        assert_eq!(unescape("/a\\040"), PathBuf::from("/a "));
        assert_eq!(unescape("/a\\04"), PathBuf::from("/a\\04"));
    }
}
