//! JSON records: small files one process writes whole and others read.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use super::fs::Durability;

/// The record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("write record {}", path.display())]
pub struct RecordError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Serialises `value` to `path` atomically (see [`super::fs::write_atomic`]).
pub fn write_json<T: Serialize>(path: &Path, value: &T, durability: Durability) -> Result<(), RecordError> {
    let err = |source| RecordError {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(value).map_err(|e| err(std::io::Error::other(e)))?;
    super::fs::write_atomic(path, &json, durability, None).map_err(err)
}

/// Reads a JSON record; a missing or unreadable one is `None` (records are
/// hints rebuilt from the desired state, never the only copy of user data).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "ignoring unreadable record");
            None
        }
    }
}

/// Now, in Unix milliseconds (the time unit of every record).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_missing_or_garbage_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x/rec.json");
        write_json(&p, &vec![1, 2, 3], Durability::Synced).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p), Some(vec![1, 2, 3]));
        assert_eq!(read_json::<Vec<i32>>(&d.path().join("none")), None);
        std::fs::write(&p, b"{not json").unwrap();
        assert_eq!(read_json::<Vec<i32>>(&p), None);
    }
}
