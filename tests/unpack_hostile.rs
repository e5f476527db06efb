//! Hostile layers: no entry may create, modify or delete anything outside the root.
//! Each case unpacks into `root/` with a sentinel tree beside it (`sentinel/`) that
//! must stay byte-for-byte untouched, and checks the refusal names layer and entry.

use std::path::Path;

use kboot::unpack::{unpack_layers, UnpackError};
use rootfs_tools::{Entry, Layer};

use crate::unpack_util::{blob, snapshot};

struct Case {
    tmp: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let s = tmp.path().join("sentinel");
        std::fs::create_dir_all(s.join("sub")).unwrap();
        std::fs::write(s.join("file"), b"precious").unwrap();
        std::fs::write(s.join("sub/file2"), b"also precious").unwrap();
        std::os::unix::fs::symlink("file", s.join("link")).unwrap();
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        std::fs::create_dir_all(tmp.path().join("blobs")).unwrap();
        Self { tmp }
    }
    fn root(&self) -> std::path::PathBuf {
        self.tmp.path().join("root")
    }
    fn sentinel(&self) -> std::path::PathBuf {
        self.tmp.path().join("sentinel")
    }
    /// Unpacks `layers` and checks the sentinel is untouched; returns the result.
    fn unpack(&self, layers: &[Layer]) -> Result<(), UnpackError> {
        let before = snapshot(&self.sentinel());
        let blobs: Vec<_> = layers.iter().map(|l| blob(&self.tmp.path().join("blobs"), l)).collect();
        let result = unpack_layers(&blobs, &self.root());
        assert_eq!(before, snapshot(&self.sentinel()), "sentinel changed");
        if let Err(e) = &result {
            // The message names the layer that carried the entry.
            let digest = &blobs.last().unwrap().digest;
            assert!(
                blobs.iter().any(|b| e.to_string().contains(&b.digest)),
                "error {e} does not name a layer ({digest})"
            );
        }
        result
    }
    fn refused(&self, layers: &[Layer], entry: &str) {
        match self.unpack(layers) {
            Err(UnpackError::Refused { entry: e, .. }) => assert_eq!(e, entry),
            other => panic!("expected {entry:?} refused, got {other:?}"),
        }
    }
}

fn hostile() -> Layer {
    Layer::unchecked()
}

#[test]
fn dotdot_names_are_refused() {
    for name in ["../sentinel/file", "a/../../sentinel/file", "..", "./../sentinel/new"] {
        let c = Case::new();
        c.refused(&[hostile().entry(Entry::file(name, b"evil".to_vec()))], name);
    }
}

#[test]
fn absolute_names_are_refused() {
    let c = Case::new();
    let name = format!("{}/file", c.sentinel().display());
    c.refused(&[hostile().entry(Entry::file(name.clone(), b"evil".to_vec()))], &name);
}

#[test]
fn symlink_parent_climbing_out_is_refused_in_the_same_layer() {
    let c = Case::new();
    c.refused(
        &[hostile()
            .entry(Entry::symlink("d", "../sentinel"))
            .entry(Entry::file("d/file", b"evil".to_vec()))],
        "d/file",
    );
}

#[test]
fn symlink_parent_from_a_lower_layer_climbing_out_is_refused() {
    let c = Case::new();
    c.refused(
        &[
            hostile()
                .entry(Entry::dir("a"))
                .entry(Entry::symlink("a/d", "../../sentinel")),
            hostile().entry(Entry::file("a/d/new", b"evil".to_vec())),
        ],
        "a/d/new",
    );
}

#[test]
fn absolute_symlink_parent_resolves_inside_the_root() {
    // `d -> /` means the container's root, so `d/evil` is the root's `evil`.
    let c = Case::new();
    let sentinel_abs = c.sentinel().display().to_string();
    c.unpack(&[hostile()
        .entry(Entry::symlink("d", "/"))
        .entry(Entry::file("d/evil", b"x".to_vec()))
        .entry(Entry::symlink("s", sentinel_abs.clone()))
        .entry(Entry::file("s/file", b"evil".to_vec()))])
        .unwrap();
    assert_eq!(std::fs::read(c.root().join("evil")).unwrap(), b"x");
    let inside = c.root().join(sentinel_abs.trim_start_matches('/')).join("file");
    assert_eq!(std::fs::read(inside).unwrap(), b"evil");
}

#[test]
fn hardlinks_to_outside_are_refused() {
    for target in ["../sentinel/file", "/etc/passwd", "a/../../sentinel/file"] {
        let c = Case::new();
        c.refused(&[hostile().entry(Entry::hardlink("h", target))], "h");
    }
    // Through a symlink climbing out, from a lower layer.
    let c = Case::new();
    c.refused(
        &[
            hostile().entry(Entry::symlink("l", "../sentinel")),
            hostile().entry(Entry::hardlink("h", "l/file")),
        ],
        "h",
    );
    // Through an absolute symlink: resolved in the root, where there is no such file.
    let c = Case::new();
    let abs = c.sentinel().display().to_string();
    c.refused(
        &[hostile()
            .entry(Entry::symlink("l", abs))
            .entry(Entry::hardlink("h", "l/file"))],
        "h",
    );
}

#[test]
fn whiteouts_climbing_out_are_refused() {
    let cases: Vec<(Layer, &str)> = vec![
        (hostile().entry(Entry::file(".wh...", Vec::new())), ".wh..."),
        (
            hostile().entry(Entry::file("../sentinel/.wh.file", Vec::new())),
            "../sentinel/.wh.file",
        ),
        (
            hostile()
                .entry(Entry::symlink("d", "../sentinel"))
                .entry(Entry::file("d/.wh.file", Vec::new())),
            "d/.wh.file",
        ),
        (
            hostile()
                .entry(Entry::symlink("d", "../sentinel"))
                .entry(Entry::file("d/.wh..wh..opq", Vec::new())),
            "d/.wh..wh..opq",
        ),
    ];
    for (layer, entry) in cases {
        let c = Case::new();
        c.refused(&[layer], entry);
    }
}

#[test]
fn whiteout_of_a_symlink_removes_the_link_not_its_target() {
    let c = Case::new();
    c.unpack(&[
        hostile()
            .entry(Entry::symlink("s", "../sentinel/file"))
            .entry(Entry::symlink("t", "../sentinel")),
        hostile().entry(Entry::whiteout("s")).entry(Entry::whiteout("t")),
    ])
    .unwrap();
    assert!(std::fs::symlink_metadata(c.root().join("s")).is_err());
    assert!(std::fs::symlink_metadata(c.root().join("t")).is_err());
}

#[test]
fn entries_replace_symlinks_instead_of_writing_through_them() {
    let c = Case::new();
    let abs = c.sentinel().join("file").display().to_string();
    c.unpack(&[
        hostile()
            .entry(Entry::symlink("f", "../sentinel/file"))
            .entry(Entry::symlink("g", abs))
            .entry(Entry::symlink("d", "../sentinel"))
            .entry(Entry::symlink("p", "../sentinel/file")),
        hostile()
            .entry(Entry::file("f", b"new".to_vec()).mode(0o777))
            .entry(Entry::file("g", b"new".to_vec()))
            .entry(Entry::dir("d").mode(0o777))
            .entry(Entry::fifo("p").mode(0o777)),
    ])
    .unwrap();
    assert_eq!(std::fs::read(c.root().join("f")).unwrap(), b"new");
    assert_eq!(std::fs::read(c.root().join("g")).unwrap(), b"new");
    assert!(std::fs::symlink_metadata(c.root().join("d")).unwrap().is_dir());
}

#[test]
fn refused_entries_stop_the_unpack_before_later_entries() {
    let c = Case::new();
    c.refused(
        &[hostile()
            .entry(Entry::file("../x", b"evil".to_vec()))
            .entry(Entry::file("after", b"x".to_vec()))],
        "../x",
    );
    assert!(!Path::new(&c.root().join("after")).exists());
}

#[test]
fn symlink_loops_are_refused_not_followed_forever() {
    let c = Case::new();
    c.refused(
        &[hostile()
            .entry(Entry::symlink("a", "b"))
            .entry(Entry::symlink("b", "a"))
            .entry(Entry::file("a/x", b"x".to_vec()))],
        "a/x",
    );
}
