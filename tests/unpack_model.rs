//! Model-based tests: random layer stacks unpacked by kboot against an in-memory
//! model of the image spec's rules (layer.md): per layer, whiteouts (`.wh.NAME`) and
//! opaque markers (`.wh..wh..opq`) remove what lower layers had, then the layer's
//! entries apply (a directory over a directory merges, anything else replaces).
//! Entry order within a layer is shuffled (parents stay before their children, as
//! every tar writer does; whiteouts go anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use kboot::unpack::unpack_layers;
use proptest::prelude::*;
use rootfs_tools::{Entry, Layer};

use crate::unpack_util::blob;

const PATHS: &[&str] = &[
    "a", "a/x", "a/y", "a/d", "a/d/z", "a/d/w", "b", "b/x", "b/d", "b/d/z", "c",
];
const FILE_MODES: &[u32] = &[0o644, 0o755, 0o4755, 0o600, 0o2711];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o1777, 0o2755];
const OWNERS: &[(u64, u64)] = &[(0, 0), (1000, 1000), (7, 9)];

#[derive(Debug, Clone)]
struct RawOp {
    path: usize,
    kind: u8,
    byte: u8,
    mode: usize,
    owner: usize,
    /// Shuffle key.
    key: u32,
}

fn raw_op() -> impl Strategy<Value = RawOp> {
    (0..PATHS.len(), 0u8..7, any::<u8>(), 0usize..5, 0usize..3, any::<u32>()).prop_map(
        |(path, kind, byte, mode, owner, key)| RawOp {
            path,
            kind,
            byte,
            mode,
            owner,
            key,
        },
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Fifo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: Kind,
    mode: u32,
    owner: (u64, u64),
    /// Inode identity: hardlinks share it.
    ino: u64,
}

type State = BTreeMap<String, Node>;
/// path → (kind, mode, owner, inode label).
type Tree = BTreeMap<String, (Kind, u32, (u64, u64), String)>;

fn parent(p: &str) -> Option<&str> {
    p.rfind('/').map(|i| &p[..i])
}
fn is_under(p: &str, ancestor: &str) -> bool {
    p.len() > ancestor.len() && p.starts_with(ancestor) && p.as_bytes()[ancestor.len()] == b'/'
}
fn remove_tree(state: &mut State, p: &str) {
    state.retain(|k, _| k != p && !is_under(k, p));
}

/// One generated layer: entries (non-whiteout) in a valid order, and markers.
#[derive(Debug, Clone, Default)]
struct GenLayer {
    entries: Vec<(String, Node, Option<String>)>, // path, node, hardlink target
    whiteouts: BTreeSet<String>,
    opaques: BTreeSet<String>,
}

/// Turns raw ops into a valid layer over `lower` (dropping conflicting ops).
fn build_layer(ops: &[RawOp], lower: &State, next_ino: &mut u64) -> GenLayer {
    let mut l = GenLayer::default();
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    let mut links = Vec::new();
    for op in ops {
        let p = PATHS[op.path].to_string();
        let owner = OWNERS[op.owner];
        let node = |kind: Kind, mode: u32, ino: &mut u64| {
            *ino += 1;
            Node {
                kind,
                mode,
                owner,
                ino: *ino,
            }
        };
        let n = match op.kind {
            0 => node(
                Kind::File(vec![op.byte; op.byte as usize % 7]),
                FILE_MODES[op.mode],
                next_ino,
            ),
            1 => node(Kind::Dir, DIR_MODES[op.mode % DIR_MODES.len()], next_ino),
            2 => node(Kind::Symlink(format!("nowhere-{}", op.byte)), 0o777, next_ino),
            3 => node(Kind::Fifo, FILE_MODES[op.mode] & 0o777, next_ino),
            4 => {
                links.push((p, op.byte));
                continue;
            }
            5 => {
                l.whiteouts.insert(p);
                continue;
            }
            _ => {
                l.opaques.insert(p);
                continue;
            }
        };
        add_entry(&mut l, &mut by_path, p, n, None, next_ino);
    }
    // Hardlinks to lower files this layer leaves alone.
    for (p, byte) in links {
        let untouched: Vec<&String> = lower
            .iter()
            .filter(|(t, n)| matches!(n.kind, Kind::File(_)) && !touched(&l, t))
            .map(|(t, _)| t)
            .collect();
        if untouched.is_empty() {
            continue;
        }
        let t = untouched[byte as usize % untouched.len()].clone();
        if t == p || is_under(&t, &p) {
            continue;
        }
        let target = lower[&t].clone();
        add_entry(&mut l, &mut by_path, p, target, Some(t), next_ino);
    }
    // A link target must stay untouched by entries added after it was chosen.
    let targets: Vec<String> = l.entries.iter().filter_map(|(_, _, t)| t.clone()).collect();
    let bad: BTreeSet<String> = targets.into_iter().filter(|t| touched(&l, t)).collect();
    l.entries
        .retain(|(_, _, t)| t.as_ref().is_none_or(|t| !bad.contains(t)));
    l
}

/// Whether this layer removes or replaces lower path `t`.
fn touched(l: &GenLayer, t: &str) -> bool {
    l.whiteouts.iter().any(|w| w == t || is_under(t, w))
        || l.opaques.iter().any(|o| is_under(t, o))
        || l.entries
            .iter()
            .any(|(p, n, _)| p == t || (is_under(t, p) && n.kind != Kind::Dir))
}

fn add_entry(
    l: &mut GenLayer,
    by_path: &mut BTreeMap<String, usize>,
    p: String,
    n: Node,
    link: Option<String>,
    next_ino: &mut u64,
) {
    if by_path.contains_key(&p) {
        return;
    }
    // No entry below a non-directory of this layer, no non-directory above entries.
    let mut anc = parent(&p);
    while let Some(a) = anc {
        if let Some(&i) = by_path.get(a) {
            if l.entries[i].1.kind != Kind::Dir {
                return;
            }
        }
        anc = parent(a);
    }
    if n.kind != Kind::Dir && by_path.keys().any(|k| is_under(k, &p)) {
        return;
    }
    // Parents as explicit directories.
    let mut missing = Vec::new();
    let mut anc = parent(&p);
    while let Some(a) = anc {
        if !by_path.contains_key(a) {
            missing.push(a.to_string());
        }
        anc = parent(a);
    }
    for a in missing.into_iter().rev() {
        *next_ino += 1;
        by_path.insert(a.clone(), l.entries.len());
        let dir = Node {
            kind: Kind::Dir,
            mode: 0o755,
            owner: (0, 0),
            ino: *next_ino,
        };
        l.entries.push((a, dir, None));
    }
    by_path.insert(p.clone(), l.entries.len());
    l.entries.push((p, n, link));
}

/// The spec's rules, applied to the model.
fn apply_model(state: &mut State, l: &GenLayer) {
    for w in &l.whiteouts {
        remove_tree(state, w);
    }
    for o in &l.opaques {
        if state.get(o).is_some_and(|n| n.kind == Kind::Dir) {
            let o = o.clone();
            state.retain(|k, _| !is_under(k, &o));
        }
    }
    let mut entries = l.entries.clone();
    entries.sort_by_key(|(p, _, _)| p.matches('/').count());
    for (p, n, link) in entries {
        if n.kind == Kind::Dir {
            if let Some(existing) = state.get_mut(&p) {
                if existing.kind == Kind::Dir {
                    existing.mode = n.mode;
                    existing.owner = n.owner;
                    continue;
                }
            }
        }
        remove_tree(state, &p);
        let node = match link {
            Some(t) => state[&t].clone(),
            None => n,
        };
        state.insert(p, node);
    }
}

/// The tar for a generated layer, entries and markers in the order given by `keys`.
fn to_tar_layer(l: &GenLayer, keys: &[u32]) -> Layer {
    let mut items: Vec<Entry> = Vec::new();
    for (p, n, link) in &l.entries {
        let e = match (link, &n.kind) {
            (Some(t), _) => Entry::hardlink(p.clone(), t.clone()),
            (None, Kind::File(c)) => Entry::file(p.clone(), c.clone()),
            (None, Kind::Dir) => Entry::dir(p.clone()),
            (None, Kind::Symlink(t)) => Entry::symlink(p.clone(), t.clone()),
            (None, Kind::Fifo) => Entry::fifo(p.clone()),
        };
        items.push(e.mode(n.mode).owner(n.owner.0, n.owner.1));
    }
    let n_entries = items.len();
    items.extend(l.whiteouts.iter().map(|w| Entry::whiteout(w)));
    items.extend(l.opaques.iter().map(|o| Entry::opaque(o)));
    // Shuffle everything, then put the entries (not the markers) back in depth order
    // in the slots entries landed in.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (keys.get(i % keys.len().max(1)).copied().unwrap_or(0), i));
    let entry_slots: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, &i)| i < n_entries)
        .map(|(s, _)| s)
        .collect();
    let mut entry_ids: Vec<usize> = order.iter().copied().filter(|&i| i < n_entries).collect();
    entry_ids.sort_by_key(|&i| (l.entries[i].0.matches('/').count(), i));
    for (slot, id) in entry_slots.into_iter().zip(entry_ids) {
        order[slot] = id;
    }
    Layer::unchecked().entries(order.into_iter().map(|i| items[i].clone()))
}

/// The unpacked tree as the model sees it (inode ids replaced by a canonical label:
/// the first path sharing the inode).
fn read_tree(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    let mut inos: BTreeMap<u64, String> = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut Tree, inos: &mut BTreeMap<u64, String>) {
        let mut children: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        children.sort();
        for c in children {
            let m = std::fs::symlink_metadata(&c).unwrap();
            let rel = c.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = if m.file_type().is_symlink() {
                Kind::Symlink(std::fs::read_link(&c).unwrap().to_string_lossy().into_owned())
            } else if m.is_dir() {
                Kind::Dir
            } else if m.file_type().is_fifo() {
                Kind::Fifo
            } else {
                Kind::File(std::fs::read(&c).unwrap())
            };
            let label = inos.entry(m.ino()).or_insert_with(|| rel.clone()).clone();
            let mode = if matches!(kind, Kind::Symlink(_)) {
                0o777
            } else {
                m.mode() & 0o7777
            };
            out.insert(
                rel,
                (kind.clone(), mode, (u64::from(m.uid()), u64::from(m.gid())), label),
            );
            if kind == Kind::Dir {
                walk(root, &c, out, inos);
            }
        }
    }
    walk(root, root, &mut out, &mut inos);
    out
}

fn expected_tree(state: &State) -> Tree {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let me = (u64::from(euid), u64::from(unsafe_getegid()));
    let mut labels: BTreeMap<u64, String> = BTreeMap::new();
    state
        .iter()
        .map(|(p, n)| {
            let label = labels.entry(n.ino).or_insert_with(|| p.clone()).clone();
            let owner = if euid == 0 { n.owner } else { me };
            (p.clone(), (n.kind.clone(), n.mode, owner, label))
        })
        .collect()
}

fn unsafe_getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn random_stacks_match_the_spec_model(
        layers in prop::collection::vec(prop::collection::vec(raw_op(), 0..10), 1..5),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let blobs_dir = tmp.path().join("blobs");
        std::fs::create_dir_all(&blobs_dir).unwrap();
        let mut state = State::new();
        let mut next_ino = 0;
        let mut blobs = Vec::new();
        for ops in &layers {
            let l = build_layer(ops, &state, &mut next_ino);
            let keys: Vec<u32> = ops.iter().map(|o| o.key).collect();
            blobs.push(blob(&blobs_dir, &to_tar_layer(&l, &keys)));
            apply_model(&mut state, &l);
        }
        let root = tmp.path().join("root");
        unpack_layers(&blobs, &root).unwrap();
        prop_assert_eq!(read_tree(&root), expected_tree(&state));
    }
}

#[test]
fn opaque_marker_after_same_layer_entries_keeps_them() {
    // The spec's own example of order independence, spelled out.
    let tmp = tempfile::tempdir().unwrap();
    let lower = Layer::new()
        .entry(Entry::file("a/old", b"old".to_vec()))
        .entry(Entry::file("a/sub/old2", b"old".to_vec()));
    let upper = Layer::unchecked()
        .entry(Entry::dir("a"))
        .entry(Entry::dir("a/sub"))
        .entry(Entry::file("a/new", b"new".to_vec()))
        .entry(Entry::whiteout("a/new"))
        .entry(Entry::opaque("a"));
    let blobs = vec![blob(tmp.path(), &lower), blob(tmp.path(), &upper)];
    let root = tmp.path().join("root");
    unpack_layers(&blobs, &root).unwrap();
    let names: Vec<String> = read_tree(&root).into_keys().collect();
    assert_eq!(names, ["a", "a/new", "a/sub"]);
}
