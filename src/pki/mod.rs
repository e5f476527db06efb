//! The cluster's PKI: CAs, serving and client certificates, the service-account key
//! pair, kubeconfigs and the bootstrap token, generated once under `Paths::pki()`.
//!
//! kube-deploy regenerated its CA whenever the master pod was recreated (an emptyDir),
//! breaking every token signed before (kube-deploy #210). Here nothing that exists is ever
//! regenerated: `ensure` only fills gaps, and `renew` re-signs leaf certificates with the
//! same CA and the same keys. Keys are ECDSA P-256, written 0600 (temp file, fsync, rename).

mod kubeconfig;
mod token;

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

pub use kubeconfig::{bootstrap_kubeconfig, client_kubeconfig, cluster_info_kubeconfig};
pub use token::{ca_cert_hash, verify_ca_hash, BootstrapToken};

/// How long leaf certificates live (kubeadm: one year; `kboot certs renew` extends them).
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// How long the CAs live (kubeadm: ten years).
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Group the bootstrap token authenticates into; bound to node bootstrap and CSR auto-approval.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kboot:default-node-token";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("generate {what}")]
    Generate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("parse {what}: {message}")]
    ParseCert { what: String, message: String },
    #[error("{} exists but its key {} is missing: restore the key or remove the certificate (kboot never replaces a CA silently)", cert.display(), key.display())]
    MissingKey { cert: PathBuf, key: PathBuf },
    #[error("no PKI under {}: run `kboot run master` first", dir.display())]
    NotInitialised { dir: PathBuf },
    #[error(
        "the PKI under {} was made for node {old}; this run is for node {new}: run with the same IP_ADDRESS and \
         MASTER_IP, or remove the old PKI with `kboot down --purge`",
        dir.display()
    )]
    IdentityChanged { dir: PathBuf, old: String, new: String },
    #[error("a bootstrap token looks like abcdef.0123456789abcdef (6 and 16 characters of [a-z0-9])")]
    BadToken,
    #[error("{0:?} is not a CA public-key hash: expected sha256: followed by 64 hex digits")]
    BadCaHash(String),
    #[error(
        "the master's CA does not match --ca-cert-hash: expected {expected}, the CA offered has {actual}; \
         refusing to join (check the hash printed by `kboot run master`)"
    )]
    CaHashMismatch { expected: String, actual: String },
    #[error("unknown certificate {name:?}; known: {known}")]
    UnknownCert { name: String, known: String },
    #[error("encode {what} as YAML")]
    EncodeYaml {
        what: String,
        #[source]
        source: serde_norway::Error,
    },
    #[error("encode {what}")]
    Encode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, PkiError>;

/// The three authorities, as kubeadm splits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authority {
    /// Signs the apiserver's serving cert and every client cert (and the kubelets' CSRs).
    Kubernetes,
    /// Signs the apiserver's client cert for aggregated APIs (request-header auth).
    FrontProxy,
    /// Signs etcd's serving and peer certs and its clients.
    Etcd,
}

impl Authority {
    pub const ALL: [Authority; 3] = [Authority::Kubernetes, Authority::FrontProxy, Authority::Etcd];

    /// File stem under the PKI directory.
    pub fn stem(self) -> &'static str {
        match self {
            Authority::Kubernetes => "ca",
            Authority::FrontProxy => "front-proxy-ca",
            Authority::Etcd => "etcd/ca",
        }
    }
    fn common_name(self) -> &'static str {
        match self {
            Authority::Kubernetes => "kubernetes",
            Authority::FrontProxy => "front-proxy-ca",
            Authority::Etcd => "etcd-ca",
        }
    }
}

/// Who this PKI is for. Recorded next to the certificates so `renew` re-issues the same names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The node name (kboot names nodes by IP, as kube-deploy's `--hostname-override`).
    pub node_name: String,
    /// Addresses the apiserver and etcd serve on and are reached at.
    pub addresses: Vec<Ipv4Addr>,
    /// `https://MASTER_IP:6443`.
    pub api_server: String,
}

impl NodeIdentity {
    pub fn new(node_ip: Ipv4Addr, master_ip: Ipv4Addr) -> Self {
        let mut addresses = vec![node_ip];
        if master_ip != node_ip {
            addresses.push(master_ip);
        }
        Self {
            node_name: node_ip.to_string(),
            addresses,
            api_server: format!("https://{master_ip}:6443"),
        }
    }
}

/// One leaf certificate kboot issues.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeafSpec {
    /// File stem under the PKI directory (`apiserver`, `etcd/server`).
    pub name: String,
    pub authority: Authority,
    pub common_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpAddr>,
    pub server: bool,
    pub client: bool,
}

/// A kubeconfig kboot writes, embedding a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KubeconfigSpec {
    pub file: &'static str,
    /// The leaf whose cert and key it embeds.
    pub leaf: &'static str,
}

/// Every leaf of a master, with the names Kubernetes authorizes them by.
pub fn leaf_specs(id: &NodeIdentity) -> Vec<LeafSpec> {
    let ips: Vec<IpAddr> = id.addresses.iter().map(|a| IpAddr::V4(*a)).collect();
    let mut api_ips = ips.clone();
    api_ips.extend([
        IpAddr::V4(crate::plan::cluster::KUBERNETES_SERVICE_IP),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    ]);
    let mut etcd_ips = ips;
    etcd_ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let leaf = |name: &str, authority, cn: &str, orgs: &[&str], server, client| LeafSpec {
        name: name.into(),
        authority,
        common_name: cn.into(),
        organizations: orgs.iter().map(|s| s.to_string()).collect(),
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        server,
        client,
    };
    use Authority::*;
    vec![
        LeafSpec {
            dns_names: [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
                "localhost",
            ]
            .map(String::from)
            .to_vec(),
            ip_addresses: api_ips,
            ..leaf("apiserver", Kubernetes, "kube-apiserver", &[], true, false)
        },
        leaf(
            "apiserver-kubelet-client",
            Kubernetes,
            "kube-apiserver-kubelet-client",
            &["system:masters"],
            false,
            true,
        ),
        leaf(
            "apiserver-etcd-client",
            Etcd,
            "kube-apiserver-etcd-client",
            &[],
            false,
            true,
        ),
        leaf("front-proxy-client", FrontProxy, "front-proxy-client", &[], false, true),
        LeafSpec {
            dns_names: vec!["localhost".into()],
            ip_addresses: etcd_ips.clone(),
            ..leaf("etcd/server", Etcd, &id.node_name, &[], true, true)
        },
        LeafSpec {
            dns_names: vec!["localhost".into()],
            ip_addresses: etcd_ips,
            ..leaf("etcd/peer", Etcd, &id.node_name, &[], true, true)
        },
        leaf(
            "etcd/healthcheck-client",
            Etcd,
            "kube-etcd-healthcheck-client",
            &[],
            false,
            true,
        ),
        leaf(
            "admin",
            Kubernetes,
            "kubernetes-admin",
            &["system:masters"],
            false,
            true,
        ),
        leaf(
            "controller-manager",
            Kubernetes,
            "system:kube-controller-manager",
            &[],
            false,
            true,
        ),
        leaf("scheduler", Kubernetes, "system:kube-scheduler", &[], false, true),
        leaf("kube-proxy", Kubernetes, "system:kube-proxy", &[], false, true),
        leaf(
            "kubelet",
            Kubernetes,
            &format!("system:node:{}", id.node_name),
            &["system:nodes"],
            false,
            true,
        ),
    ]
}

/// The kubeconfigs of a master.
pub const KUBECONFIGS: [KubeconfigSpec; 5] = [
    KubeconfigSpec {
        file: "admin.conf",
        leaf: "admin",
    },
    KubeconfigSpec {
        file: "controller-manager.conf",
        leaf: "controller-manager",
    },
    KubeconfigSpec {
        file: "scheduler.conf",
        leaf: "scheduler",
    },
    KubeconfigSpec {
        file: "kube-proxy.conf",
        leaf: "kube-proxy",
    },
    KubeconfigSpec {
        file: "kubelet.conf",
        leaf: "kubelet",
    },
];

/// File names inside the PKI directory, so other modules never spell them twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiLayout {
    dir: PathBuf,
}

impl PkiLayout {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn cert(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.crt"))
    }
    pub fn key(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}.key"))
    }
    pub fn ca_cert(&self, a: Authority) -> PathBuf {
        self.cert(a.stem())
    }
    pub fn ca_key(&self, a: Authority) -> PathBuf {
        self.key(a.stem())
    }
    pub fn kubeconfig(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
    /// Service-account token signing key (private) and verification key (public).
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
    /// The master's bootstrap token, `id.secret`, 0600.
    pub fn bootstrap_token(&self) -> PathBuf {
        self.dir.join("bootstrap-token")
    }
    /// A worker's kubeconfig for TLS bootstrapping (bootstrap token + the master's CA).
    pub fn bootstrap_kubeconfig(&self) -> PathBuf {
        self.dir.join("bootstrap-kubelet.conf")
    }
    /// Who the PKI was made for.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.json")
    }
}

/// Writes `bytes` to `path` with exactly `mode`, durably (fsync the file and the
/// directory): keys and certificates are the only copy. Parents are created.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    crate::base::fs::write_atomic(path, bytes, crate::base::fs::Durability::Durable, Some(mode))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic(path, bytes, mode).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn gen<T>(what: &str, r: std::result::Result<T, rcgen::Error>) -> Result<T> {
    r.map_err(|source| PkiError::Generate {
        what: what.to_string(),
        source,
    })
}

/// DER of the first CERTIFICATE block of a PEM text.
pub(crate) fn pem_cert_der(pem_text: &str, what: &str) -> Result<Vec<u8>> {
    let block = pem::parse(pem_text).map_err(|e| PkiError::ParseCert {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    if block.tag() != "CERTIFICATE" {
        return Err(PkiError::ParseCert {
            what: what.to_string(),
            message: format!("expected a CERTIFICATE block, found {}", block.tag()),
        });
    }
    Ok(block.contents().to_vec())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A little back-dating tolerates clock skew between nodes.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days);
    params.serial_number = Some(random_serial());
}

fn ca_params(a: Authority) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, a.common_name());
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, CA_VALIDITY_DAYS);
    p
}

fn leaf_params(spec: &LeafSpec) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    for o in &spec.organizations {
        p.distinguished_name.push(DnType::OrganizationName, o.as_str());
    }
    p.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if spec.server {
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client {
        p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    p.subject_alt_names = spec
        .dns_names
        .iter()
        .filter_map(|d| d.as_str().try_into().ok().map(SanType::DnsName))
        .chain(spec.ip_addresses.iter().map(|ip| SanType::IpAddress(*ip)))
        .collect();
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, LEAF_VALIDITY_DAYS);
    p
}

/// What `ensure` did, for the caller to report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnsureReport {
    pub created: Vec<String>,
    pub kept: Vec<String>,
}

/// Loads a CA (cert + key) or creates it when neither file exists.
fn ensure_ca(layout: &PkiLayout, a: Authority, report: &mut EnsureReport) -> Result<Issuer<'static, KeyPair>> {
    let (crt, key) = (layout.ca_cert(a), layout.ca_key(a));
    match (crt.exists(), key.exists()) {
        (true, true) => {
            report.kept.push(a.stem().to_string());
            load_ca(layout, a)
        }
        (true, false) => Err(PkiError::MissingKey { cert: crt, key }),
        (false, _) => {
            let kp = gen(a.stem(), KeyPair::generate())?;
            let cert = gen(a.stem(), ca_params(a).self_signed(&kp))?;
            write(&key, kp.serialize_pem().as_bytes(), 0o600)?;
            write(&crt, cert.pem().as_bytes(), 0o644)?;
            report.created.push(a.stem().to_string());
            load_ca(layout, a)
        }
    }
}

fn load_ca(layout: &PkiLayout, a: Authority) -> Result<Issuer<'static, KeyPair>> {
    let key_pem = read(&layout.ca_key(a))?;
    let kp = gen(a.stem(), KeyPair::from_pem(&key_pem))?;
    let crt_pem = read(&layout.ca_cert(a))?;
    gen(a.stem(), Issuer::from_ca_cert_pem(&crt_pem, kp))
}

fn issue_leaf(layout: &PkiLayout, spec: &LeafSpec, issuer: &Issuer<'_, KeyPair>, reuse_key: bool) -> Result<()> {
    let key_path = layout.key(&spec.name);
    let kp = if reuse_key && key_path.exists() {
        gen(&spec.name, KeyPair::from_pem(&read(&key_path)?))?
    } else {
        let kp = gen(&spec.name, KeyPair::generate())?;
        write(&key_path, kp.serialize_pem().as_bytes(), 0o600)?;
        kp
    };
    let cert = gen(&spec.name, leaf_params(spec).signed_by(&kp, issuer))?;
    write(&layout.cert(&spec.name), cert.pem().as_bytes(), 0o644)
}

fn write_kubeconfig(layout: &PkiLayout, id: &NodeIdentity, kc: &KubeconfigSpec, spec: &LeafSpec) -> Result<()> {
    let text = client_kubeconfig(
        &id.api_server,
        &read(&layout.ca_cert(Authority::Kubernetes))?,
        &spec.common_name,
        &read(&layout.cert(kc.leaf))?,
        &read(&layout.key(kc.leaf))?,
    )?;
    write(&layout.kubeconfig(kc.file), text.as_bytes(), 0o600)
}

fn issuer_for<'a>(issuers: &'a [(Authority, Issuer<'static, KeyPair>)], a: Authority) -> &'a Issuer<'static, KeyPair> {
    &issuers
        .iter()
        .find(|(x, _)| *x == a)
        .expect("every authority is loaded before leaves are issued")
        .1
}

/// Creates whatever of the master's PKI is missing and keeps everything that exists.
pub fn ensure_master(layout: &PkiLayout, id: &NodeIdentity) -> Result<EnsureReport> {
    let mut report = EnsureReport::default();
    fs::create_dir_all(layout.dir().join("etcd")).map_err(|source| PkiError::Write {
        path: layout.dir().to_path_buf(),
        source,
    })?;
    // The directory holds keys: only root may list it.
    for d in [layout.dir().to_path_buf(), layout.dir().join("etcd")] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).map_err(|source| PkiError::Write {
            path: d.clone(),
            source,
        })?;
    }
    match read_identity(layout)? {
        Some(old) if old != *id => {
            return Err(PkiError::IdentityChanged {
                dir: layout.dir().to_path_buf(),
                old: format!("{} ({:?})", old.node_name, old.addresses),
                new: format!("{} ({:?})", id.node_name, id.addresses),
            })
        }
        Some(_) => {}
        None => {
            let json = serde_json::to_vec_pretty(id).map_err(|source| PkiError::Encode {
                what: "identity.json".into(),
                source,
            })?;
            write(&layout.identity(), &json, 0o644)?;
        }
    }
    let issuers = Authority::ALL
        .into_iter()
        .map(|a| ensure_ca(layout, a, &mut report).map(|i| (a, i)))
        .collect::<Result<Vec<_>>>()?;

    if layout.sa_key().exists() && layout.sa_pub().exists() {
        report.kept.push("sa".into());
    } else {
        let kp = gen("service-account key", KeyPair::generate())?;
        write(&layout.sa_key(), kp.serialize_pem().as_bytes(), 0o600)?;
        write(&layout.sa_pub(), kp.public_key_pem().as_bytes(), 0o644)?;
        report.created.push("sa".into());
    }

    let specs = leaf_specs(id);
    for spec in &specs {
        if layout.cert(&spec.name).exists() && layout.key(&spec.name).exists() {
            report.kept.push(spec.name.clone());
        } else {
            issue_leaf(layout, spec, issuer_for(&issuers, spec.authority), false)?;
            report.created.push(spec.name.clone());
        }
    }
    for kc in &KUBECONFIGS {
        if layout.kubeconfig(kc.file).exists() {
            report.kept.push(kc.file.to_string());
        } else {
            let spec = specs
                .iter()
                .find(|s| s.name == kc.leaf)
                .expect("kubeconfig leaf is in the inventory");
            write_kubeconfig(layout, id, kc, spec)?;
            report.created.push(kc.file.to_string());
        }
    }
    if layout.bootstrap_token().exists() {
        report.kept.push("bootstrap-token".into());
    } else {
        write(
            &layout.bootstrap_token(),
            format!("{}\n", BootstrapToken::generate().expose()).as_bytes(),
            0o600,
        )?;
        report.created.push("bootstrap-token".into());
    }
    Ok(report)
}

fn read_identity(layout: &PkiLayout) -> Result<Option<NodeIdentity>> {
    let path = layout.identity();
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PkiError::ParseCert {
                what: path.display().to_string(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Read { path, source }),
    }
}

/// Re-signs leaf certificates (all, or those named) with the same CA and keys, and rewrites
/// the kubeconfigs that embed them. CAs are never renewed here. Returns the renewed names.
pub fn renew(layout: &PkiLayout, only: &[String]) -> Result<Vec<String>> {
    let id = read_identity(layout)?.ok_or_else(|| PkiError::NotInitialised {
        dir: layout.dir().to_path_buf(),
    })?;
    let specs = leaf_specs(&id);
    for name in only {
        if !specs.iter().any(|s| &s.name == name) {
            return Err(PkiError::UnknownCert {
                name: name.clone(),
                known: specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    let issuers = Authority::ALL
        .into_iter()
        .map(|a| load_ca(layout, a).map(|i| (a, i)))
        .collect::<Result<Vec<_>>>()?;
    let mut renewed = Vec::new();
    for spec in specs.iter().filter(|s| only.is_empty() || only.contains(&s.name)) {
        issue_leaf(layout, spec, issuer_for(&issuers, spec.authority), true)?;
        renewed.push(spec.name.clone());
    }
    for kc in KUBECONFIGS.iter().filter(|kc| renewed.iter().any(|r| r == kc.leaf)) {
        let spec = specs
            .iter()
            .find(|s| s.name == kc.leaf)
            .expect("kubeconfig leaf is in the inventory");
        write_kubeconfig(layout, &id, kc, spec)?;
    }
    Ok(renewed)
}

/// One certificate's expiry, for `kboot certs check`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertStatus {
    pub name: String,
    pub path: PathBuf,
    pub subject: String,
    pub issuer: String,
    pub is_ca: bool,
    /// RFC 3339.
    pub not_after: String,
    /// Whole days left (negative once expired).
    pub days_left: i64,
}

/// Every certificate under the PKI directory, sorted by name.
pub fn check(layout: &PkiLayout) -> Result<Vec<CertStatus>> {
    if !layout.identity().exists() && !layout.ca_cert(Authority::Kubernetes).exists() {
        return Err(PkiError::NotInitialised {
            dir: layout.dir().to_path_buf(),
        });
    }
    let mut out = Vec::new();
    let mut dirs = vec![layout.dir().to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = fs::read_dir(&d).map_err(|source| PkiError::Read {
            path: d.clone(),
            source,
        })?;
        for e in entries {
            let path = e
                .map_err(|source| PkiError::Read {
                    path: d.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "crt") {
                out.push(cert_status(layout, &path)?);
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn cert_status(layout: &PkiLayout, path: &Path) -> Result<CertStatus> {
    let der = pem_cert_der(&read(path)?, &path.display().to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::ParseCert {
        what: path.display().to_string(),
        message: e.to_string(),
    })?;
    let not_after = cert.validity().not_after.to_datetime();
    let name = path
        .strip_prefix(layout.dir())
        .unwrap_or(path)
        .with_extension("")
        .display()
        .to_string();
    Ok(CertStatus {
        name,
        path: path.to_path_buf(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        is_ca: cert.is_ca(),
        not_after: not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        days_left: (not_after - OffsetDateTime::now_utc()).whole_days(),
    })
}

/// The worker side of the join: checks the master's CA against the pinned hash, then writes
/// it and the bootstrap kubeconfig the kubelet uses for TLS bootstrapping.
pub fn write_worker_bootstrap(
    layout: &PkiLayout,
    master_ca_pem: &str,
    ca_cert_hash: &str,
    api_server: &str,
    token: &BootstrapToken,
) -> Result<()> {
    verify_ca_hash(master_ca_pem, ca_cert_hash)?;
    let ca = layout.ca_cert(Authority::Kubernetes);
    if ca.exists() {
        // A worker that joined before keeps its CA only if it is the same one.
        verify_ca_hash(&read(&ca)?, ca_cert_hash)?;
    }
    write(&ca, master_ca_pem.as_bytes(), 0o644)?;
    let text = bootstrap_kubeconfig(api_server, master_ca_pem, token)?;
    write(&layout.bootstrap_kubeconfig(), text.as_bytes(), 0o600)
}

/// The master's bootstrap token (created by [`ensure_master`]).
pub fn read_bootstrap_token(layout: &PkiLayout) -> Result<BootstrapToken> {
    read(&layout.bootstrap_token())?.parse()
}

#[cfg(test)]
mod tests;
