//! Image reference parsing without oci-spec's regex.
//!
//! `oci_spec::distribution::Reference::from_str` matches one large regex whose
//! tag part (`[\w][\w.-]{0,127}`, Unicode classes repeated 128 times) compiles
//! into about 15 MB of automata, kept for the life of the process. The supervisor
//! parses a reference on the first CRI image call, so that regex alone was most
//! of its memory (bench/README.md `## Containers`). This parser follows the same
//! grammar (distribution's `reference` package) by hand, with ASCII word
//! characters in tags as Docker has them, and builds the same `Reference`.

use oci_spec::distribution::{ParseError, Reference};

const NAME_TOTAL_LENGTH_MAX: usize = 255;
const TAG_LENGTH_MAX: usize = 128;

/// Parses and normalises `s` like `Reference::from_str`: Docker Hub short names
/// get `docker.io` and `library/`, and a reference without tag or digest gets `latest`.
pub fn parse(s: &str) -> Result<Reference, ParseError> {
    if s.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (s, None),
    };
    // A tag follows the last `:` after the last `/` (an earlier `:` is a registry port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if !valid_name(name) || tag.is_some_and(|t| !valid_tag(t)) || digest.is_some_and(|d| !valid_digest_syntax(d)) {
        return Err(ParseError::ReferenceInvalidFormat);
    }
    let (registry, repository) = split_domain(name);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    if let Some(d) = digest {
        check_digest_length(d)?;
    }
    let tag = tag.map(str::to_owned);
    Ok(match (tag, digest.map(str::to_owned)) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (t, None) => Reference::with_tag(registry, repository, t.unwrap_or_else(|| "latest".into())),
    })
}

/// `[domain "/"] path-component ("/" path-component)*`.
fn valid_name(name: &str) -> bool {
    let mut parts = name.split('/').peekable();
    let Some(first) = parts.next() else { return false };
    let first_ok = if parts.peek().is_some() {
        valid_path_component(first) || valid_domain(first)
    } else {
        valid_path_component(first)
    };
    first_ok && parts.all(valid_path_component)
}

/// `[a-z0-9]+ (("." | "_" | "__" | "-"*) [a-z0-9]+)*`.
fn valid_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

/// `label ("." label)* [":" port]`, labels of letters, digits and inner hyphens.
fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    let label = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    };
    host.split('.').all(label) && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= TAG_LENGTH_MAX && word(b[0]) && b.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
}

/// `algorithm ":" hex{32,}`, algorithm `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*`.
fn valid_digest_syntax(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|part| {
        let b = part.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_digest_length(d: &str) -> Result<(), ParseError> {
    let (alg, hex) = d.split_once(':').ok_or(ParseError::DigestInvalidFormat)?;
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(ParseError::DigestUnsupported),
    };
    if hex.len() == want {
        Ok(())
    } else {
        Err(ParseError::DigestInvalidLength)
    }
}

/// Registry and repository as Docker splits them: the first component is a
/// registry only if it has a `.` or a `:` or is `localhost`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains(['.', ':']) || left == "localhost" => (left.to_owned(), right.to_owned()),
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// The same answers as oci-spec's regex parser, valid and invalid inputs alike.
    #[test]
    fn parse_agrees_with_oci_spec() {
        let d = "a".repeat(64);
        let cases = [
            "etcd".to_owned(),
            "etcd:3.5".into(),
            "library/etcd".into(),
            "docker.io/etcd".into(),
            "index.docker.io/library/etcd:v1".into(),
            "registry.k8s.io/pause:3.9".into(),
            "registry.k8s.io/coredns/coredns:v1.12.0".into(),
            "127.0.0.1:5055/kube-apiserver:v1.34.4".into(),
            "localhost/x".into(),
            "localhost:5000/a/b/c:t".into(),
            "localhost:5000".into(),
            "Host.Example:443/repo".into(),
            "quay.io/x/y@sha256:".to_owned() + &d,
            format!("quay.io/x/y:tag@sha256:{d}"),
            format!("x@sha256:{d}"),
            format!("x@sha512:{}", "b".repeat(128)),
            format!("x@sha256:{}", "a".repeat(63)),
            format!("x@md5:{}", "a".repeat(32)),
            format!("x@sha256:{}", "g".repeat(64)),
            "a__b/c-d/e.f_g:_t.-".into(),
            "a---b".into(),
            "a___b".into(),
            "a..b".into(),
            "-a".into(),
            "a-".into(),
            "A".into(),
            "foo/Bar".into(),
            "bad name!".into(),
            "x:".into(),
            "x:.t".into(),
            format!("x:{}", "t".repeat(128)),
            format!("x:{}", "t".repeat(129)),
            "".into(),
            "/x".into(),
            "x/".into(),
            "x//y".into(),
            "ex-ample.com:80/x".into(),
            "-ex.com/x".into(),
            "ex.com:/x".into(),
            "ex.com:8a/x".into(),
            format!("x/{}", "y".repeat(260)),
            "x@".into(),
            "x@sha256".into(),
        ];
        for c in &cases {
            let theirs = Reference::from_str(c);
            let ours = parse(c);
            assert_eq!(ours, theirs, "{c:?}");
        }
    }
}
