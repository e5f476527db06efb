//! The layering of docs/architecture.md, checked against the code: every
//! `crate::module` path in `src/` must be allowed by [`LAYERS`], and files of a
//! module must not import each other in a cycle. Text-level (no compiler): it
//! reads `crate::a::…`, `use crate::{a, b}` and `super::file` paths outside
//! comments, which is how this crate writes every import.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Module → the modules it may use (besides itself), as in docs/architecture.md.
/// `cli` (and `main.rs`, `lib.rs`) may use anything; nothing may use `cli`.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("logging", &[]),
    ("inroot", &[]),
    ("cgroups", &["base"]),
    ("seal", &[]),
    ("layering", &[]),
    ("state", &[]),
    ("plan", &[]),
    ("pki", &["base", "plan"]),
    ("store", &["base", "state"]),
    ("registry", &["base", "state", "store"]),
    ("unpack", &["state", "store"]),
    (
        "bundle",
        &["base", "cgroups", "inroot", "plan", "state", "store", "unpack"],
    ),
    ("shim", &["base", "bundle", "cgroups", "inroot", "state"]),
    (
        "cri",
        &[
            "base", "bundle", "cgroups", "inroot", "plan", "registry", "shim", "state", "store",
        ],
    ),
    (
        "supervisor",
        &["base", "bundle", "cgroups", "cri", "plan", "shim", "state"],
    ),
    ("roles", &["base", "cgroups", "pki", "plan", "state"]),
    ("preflight", &["cgroups", "roles", "state"]),
    ("service", &["base", "roles", "state"]),
    (
        "node",
        &[
            "base",
            "bundle",
            "cri",
            "pki",
            "preflight",
            "registry",
            "roles",
            "service",
            "shim",
            "state",
            "store",
            "supervisor",
        ],
    ),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and string literals' contents (a doc
/// comment may name a module it does not import).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let (mut in_str, mut in_block) = (false, 0u32);
    while let Some(c) = chars.next() {
        if in_block > 0 {
            if c == '*' && chars.peek() == Some(&'/') {
                chars.next();
                in_block -= 1;
            } else if c == '/' && chars.peek() == Some(&'*') {
                chars.next();
                in_block += 1;
            }
        } else if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
        } else if c == '/' && chars.peek() == Some(&'/') {
            for c in chars.by_ref() {
                if c == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else if c == '/' && chars.peek() == Some(&'*') {
            chars.next();
            in_block = 1;
        } else if c == 'r'
            && matches!(chars.peek(), Some('#' | '"'))
            && !out.ends_with(|p: char| p.is_ascii_alphanumeric() || p == '_')
        {
            // A raw string: skip to the closing quote and as many '#'.
            let mut hashes = 0;
            while chars.peek() == Some(&'#') {
                chars.next();
                hashes += 1;
            }
            if chars.next() != Some('"') {
                continue;
            }
            let mut closing = 0;
            let mut quoted = false;
            for c in chars.by_ref() {
                if quoted && c == '#' {
                    closing += 1;
                } else {
                    quoted = c == '"';
                    closing = 0;
                }
                if quoted && closing == hashes {
                    break;
                }
            }
            out.push_str("\"\"");
        } else if c == '"' && !out.ends_with('\'') {
            in_str = true;
            out.push('"');
        } else {
            out.push(c);
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segments of every path that starts with `prefix` (`crate::`,
/// `super::`): `prefix a::…` gives `a`; `prefix {a, b::c}` gives `a` and `b`.
fn first_segments(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let boundary = rest[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        rest = &rest[i + prefix.len()..];
        if !boundary {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut start) = (1, true);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 1 => break,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if c.is_whitespace() => {}
                    _ if start && depth == 1 => {
                        out.insert(ident_at(&group[j..]).to_string());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(rest).to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `src/cri/container.rs` → `cri`; `src/logging.rs` → `logging`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn imports_follow_docs_architecture() {
    let src = src_dir();
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if ["cli", "main", "lib"].contains(&module.as_str()) {
            continue;
        }
        let allowed = layers
            .get(module.as_str())
            .unwrap_or_else(|| panic!("module `{module}` is not in LAYERS (src/layering.rs) nor docs/architecture.md"));
        let code = code_of(&fs::read_to_string(file).unwrap());
        for used in first_segments(&code, "crate::") {
            let counts = used != module && layers.contains_key(used.as_str()) || used == "cli";
            if counts && !allowed.contains(&used.as_str()) {
                wrong.push(format!("{} uses `{used}`", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layering of docs/architecture.md (move the code down, or change the table and the doc):\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn files_of_a_module_import_each_other_without_cycles() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Edges between sibling files of one directory (mod.rs, the module's face, excluded).
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        let dir = file.parent().unwrap();
        if file.file_name().is_some_and(|n| n == "mod.rs") {
            continue;
        }
        let code = code_of(&fs::read_to_string(file).unwrap());
        let mut used = first_segments(&code, "super::");
        // `crate::<module>::<file>` from inside the same module directory.
        if let Ok(rel) = dir.strip_prefix(&src) {
            let own = format!("crate::{}::", rel.display().to_string().replace('/', "::"));
            if !rel.as_os_str().is_empty() {
                used.extend(first_segments(&code, &own));
            }
        }
        for name in used {
            let sibling = dir.join(format!("{name}.rs"));
            if sibling != *file && sibling.exists() {
                edges.entry(file.clone()).or_default().insert(sibling);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        f: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        state: &mut BTreeMap<PathBuf, u8>,
        stack: &mut Vec<PathBuf>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(f.clone(), 1);
        stack.push(f.clone());
        for g in edges.get(f).into_iter().flatten() {
            match state.get(g) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == g).unwrap();
                    let names: Vec<_> = stack[at..].iter().chain([g]).map(|p| p.display().to_string()).collect();
                    cycles.push(names.join(" -> "));
                }
                Some(_) => {}
                None => visit(g, edges, state, stack, cycles),
            }
        }
        stack.pop();
        state.insert(f.clone(), 2);
    }
    let (mut state, mut stack, mut cycles) = (BTreeMap::new(), Vec::new(), Vec::new());
    for f in edges.keys() {
        if !state.contains_key(f) {
            visit(f, &edges, &mut state, &mut stack, &mut cycles);
        }
    }
    assert!(
        cycles.is_empty(),
        "files importing each other in a cycle (move the shared helper into the lower file):\n  {}",
        cycles.join("\n  ").replace(&format!("{}/", src.display()), "")
    );
}

#[test]
fn the_parser_reads_grouped_and_plain_paths_and_skips_comments() {
    let code = code_of("use crate::{a, b::{c, d}};\n// crate::no\nlet x = crate::e::f(\"crate::nostr\");\n/* crate::nob */ super::g::h;");
    assert_eq!(
        first_segments(&code, "crate::"),
        ["a", "b", "e"].map(String::from).into()
    );
    assert_eq!(first_segments(&code, "super::"), ["g"].map(String::from).into());
}
