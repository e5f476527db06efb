//! Credentials, `WWW-Authenticate` challenges, and the Bearer token cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// A user name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// `USER:PASS` (the password may contain `:`).
    pub fn parse(s: &str) -> Option<Self> {
        let (u, p) = s.split_once(':')?;
        (!u.is_empty()).then(|| Self {
            username: u.to_string(),
            password: p.to_string(),
        })
    }

    /// Docker's `auths.<host>.auth`: base64 of `user:pass`.
    pub fn from_docker_auth(encoded: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
        Self::parse(std::str::from_utf8(&bytes).ok()?)
    }
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        Some(Challenge::Bearer {
            realm: params.get("realm")?.clone(),
            service: params.get("service").cloned(),
            scope: params.get("scope").cloned(),
        })
    }
}

/// `key="value", key2=value2` with quoted values that may contain commas.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

/// What to send with requests to one repository.
#[derive(Clone, PartialEq, Eq)]
pub enum Authorization {
    Basic(Credentials),
    Bearer(String),
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Authorization::Basic(c) => f.debug_tuple("Basic").field(c).finish(),
            Authorization::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// What to send, and until when (`None`: until the registry says no).
type Cached = (Authorization, Option<Instant>);

/// Bearer tokens and Basic decisions per (registry, repository), until expiry.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<(String, String), Cached>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("TokenCache").field("entries", &n).finish()
    }
}

impl TokenCache {
    pub fn get(&self, registry: &str, repository: &str) -> Option<Authorization> {
        let mut entries = self.entries.lock().ok()?;
        let key = (registry.to_string(), repository.to_string());
        match entries.get(&key) {
            Some((_, Some(exp))) if *exp <= Instant::now() => {
                entries.remove(&key);
                None
            }
            Some((auth, _)) => Some(auth.clone()),
            None => None,
        }
    }

    /// Remembers an authorization; Bearer tokens expire a little early so a
    /// request never leaves with a token about to lapse.
    pub fn put(&self, registry: &str, repository: &str, auth: Authorization, lifetime: Option<Duration>) {
        let expiry = lifetime.map(|l| Instant::now() + l.saturating_sub(Duration::from_secs(5)));
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert((registry.to_string(), repository.to_string()), (auth, expiry));
        }
    }

    pub fn forget(&self, registry: &str, repository: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(&(registry.to_string(), repository.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parses_bearer_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(Challenge::parse(r#"Basic realm="test""#), Some(Challenge::Basic));
        assert_eq!(Challenge::parse("Bearer service=x"), None, "realm is required");
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let c = Credentials::parse("user:s3cr:et").unwrap();
        assert_eq!(c.password, "s3cr:et");
        let shown = format!("{c:?} {:?}", Authorization::Basic(c.clone()));
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(!format!("{:?}", Authorization::Bearer("tok123".into())).contains("tok123"));
        assert_eq!(
            Credentials::from_docker_auth("dXNlcjpwYXNz"),
            Credentials::parse("user:pass")
        );
    }

    #[test]
    fn token_cache_is_per_repository_and_expires() {
        let cache = TokenCache::default();
        cache.put(
            "r",
            "a",
            Authorization::Bearer("t".into()),
            Some(Duration::from_secs(60)),
        );
        assert!(cache.get("r", "a").is_some());
        assert!(cache.get("r", "b").is_none());
        cache.put(
            "r",
            "c",
            Authorization::Bearer("t".into()),
            Some(Duration::from_secs(1)),
        );
        assert!(
            cache.get("r", "c").is_none(),
            "a token within 5 s of expiry is not reused"
        );
    }
}
