use std::io::Read;

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&Paths::under(tmp.path())).unwrap();
    (tmp, store)
}

fn sha(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    blob::digest_of_hex(&hex::encode(sha2::Sha256::digest(bytes)))
}

#[test]
fn normalize_reference_expands_docker_hub_short_names() {
    assert_eq!(
        normalize_reference("etcd").unwrap().whole(),
        "docker.io/library/etcd:latest"
    );
    assert_eq!(
        normalize_reference("registry.k8s.io/pause:3.9").unwrap().whole(),
        "registry.k8s.io/pause:3.9"
    );
    let d = format!("sha256:{}", "a".repeat(64));
    assert_eq!(
        normalize_reference(&format!("quay.io/x/y@{d}")).unwrap().whole(),
        format!("quay.io/x/y@{d}")
    );
    assert!(matches!(
        normalize_reference("bad name!"),
        Err(StoreError::InvalidReference { .. })
    ));
}

#[test]
fn write_blob_verifies_digest_and_stores_nothing_on_mismatch() {
    let (_tmp, store) = store();
    let good = sha(b"hello");
    assert_eq!(store.write_blob(b"hello", Some(&good)).unwrap(), good);
    let mut content = String::new();
    store.open_blob(&good).unwrap().read_to_string(&mut content).unwrap();
    assert_eq!(content, "hello");

    let claimed = sha(b"other");
    let err = store.write_blob(b"hellx", Some(&claimed)).unwrap_err();
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    assert!(!store.blob_path(&claimed).exists());
    assert_eq!(std::fs::read_dir(store.paths().ingest()).unwrap().count(), 0);
}

#[test]
fn ingest_resumes_from_partial_file_and_reports_present_after_commit() {
    let (_tmp, store) = store();
    let data = vec![7u8; 100_000];
    let digest = sha(&data);
    let Ingest::Write(mut w) = store.ingest(&digest).unwrap() else {
        panic!("fresh blob present")
    };
    w.write_chunk(&data[..40_000]).unwrap();
    drop(w); // interrupted
    let Ingest::Write(mut w) = store.ingest(&digest).unwrap() else {
        panic!("partial blob present")
    };
    assert_eq!(w.offset(), 40_000);
    w.write_chunk(&data[40_000..]).unwrap();
    assert_eq!(w.commit().unwrap(), digest);
    assert!(matches!(store.ingest(&digest).unwrap(), Ingest::Present));
    assert_eq!(std::fs::read(store.blob_path(&digest)).unwrap(), data);
}

#[test]
fn resolve_unknown_image_says_how_to_get_it() {
    let (_tmp, store) = store();
    let err = store.resolve("etcd:3.5").unwrap_err().to_string();
    assert!(err.contains("docker.io/library/etcd:3.5"), "{err}");
    assert!(err.contains("kboot pull") && err.contains("kboot load"), "{err}");
}

#[test]
fn parse_manifest_refuses_schema1_and_unknown_media_types() {
    let v1 = br#"{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}"#;
    let err = parse_manifest(v1, "sha256:x").unwrap_err().to_string();
    assert!(err.contains("schema 1") && err.contains("re-push"), "{err}");
    let odd = br#"{"schemaVersion":2,"mediaType":"application/vnd.example+json"}"#;
    assert!(matches!(
        parse_manifest(odd, "sha256:x"),
        Err(StoreError::UnsupportedMediaType { .. })
    ));
    assert!(matches!(
        parse_manifest(b"{not json", "sha256:x"),
        Err(StoreError::ParseJson { .. })
    ));
}
