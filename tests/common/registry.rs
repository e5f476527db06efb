//! Debian's `docker-registry` (distribution v2) on 127.0.0.1 with a free port
//! per test: plain, htpasswd Basic, TLS from a test CA, or Bearer tokens from
//! [`TokenService`]. Plus [`FaultProxy`], which sits between kboot and the
//! registry and breaks answers on purpose.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Request, Response, StatusCode};
use axum::routing::{any, get};
use axum::Router;
use base64::Engine as _;
use futures_util::StreamExt;

use super::run_ok;

pub const USER: &str = "kboot";
pub const PASS: &str = "s3cret-pass";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("docker-registry exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not listen on 127.0.0.1:{port}");
}

/// `NAME.key` and a self-signed `NAME.pem` in `dir`.
fn self_signed(dir: &Path, name: &str, subject: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    run_ok(Command::new("openssl").current_dir(dir).args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem, "-days", "2", "-subj", subject,
    ]));
}

/// A test CA and a server certificate for 127.0.0.1, made with openssl.
pub struct TestCa {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path) -> Self {
        let p = |n: &str| dir.join(n);
        let ext = p("ext.cnf");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(dir));
        };
        self_signed(dir, "ca", "/CN=kboot test CA");
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Self {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        }
    }
}

pub enum Auth {
    None,
    Htpasswd,
    Tls,
    Token,
}

/// A running registry; killed on drop.
pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub ca: Option<TestCa>,
    pub tokens: Option<TokenService>,
    child: Child,
}

impl Registry {
    pub fn start(auth: Auth) -> Self {
        let dir = tempfile::Builder::new().prefix("kboot-registry-").tempdir().unwrap();
        let port = free_port();
        let mut http = format!("  addr: 127.0.0.1:{port}\n  secret: kboot-test\n");
        let mut auth_yaml = String::new();
        let mut ca = None;
        let mut tokens = None;
        match auth {
            Auth::None => {}
            Auth::Htpasswd => {
                let out = run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASS]));
                std::fs::write(dir.path().join("htpasswd"), out.stdout).unwrap();
                auth_yaml = format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    dir.path().join("htpasswd").display()
                );
            }
            Auth::Tls => {
                let c = TestCa::new(dir.path());
                http += &format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    c.cert.display(),
                    c.key.display()
                );
                ca = Some(c);
            }
            Auth::Token => {
                let t = TokenService::start(dir.path());
                auth_yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: kboot-test-registry\n    issuer: kboot-test-issuer\n    rootcertbundle: {}\n",
                    t.addr,
                    t.cert.display()
                );
                tokens = Some(t);
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n{http}{auth_yaml}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start /usr/bin/docker-registry (apt package docker-registry)");
        wait_listening(port, &mut child);
        Self {
            port,
            dir,
            ca,
            tokens,
            child,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `layout:name` (an OCI layout entry, index or manifest) to `repo:tag`.
    pub fn push(&self, layout: &Path, name: &str, repo_tag: &str) {
        self.push_as(layout, name, repo_tag, None);
    }

    /// Like [`Self::push`], with skopeo's `--format` (`v2s2` converts to Docker schema 2).
    pub fn push_as(&self, layout: &Path, name: &str, repo_tag: &str, format: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--all", "--dest-tls-verify=false"]);
        if let Some(f) = format {
            cmd.args(["--format", f]);
        }
        if matches!(self.auth_kind(), Some(true)) {
            cmd.arg(format!("--dest-creds={USER}:{PASS}"));
        }
        cmd.arg(format!("oci:{}:{name}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        run_ok(&mut cmd);
    }

    /// Whether pushes need credentials.
    fn auth_kind(&self) -> Option<bool> {
        Some(self.tokens.is_some() || self.dir.path().join("htpasswd").exists())
    }

    /// `skopeo copy docker://… oci:DIR` of the same image, for differential tests.
    pub fn skopeo_pull(&self, repo_tag: &str, dest: &Path) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--insecure-policy", "copy", "--src-tls-verify=false"]);
        if matches!(self.auth_kind(), Some(true)) {
            cmd.arg(format!("--src-creds={USER}:{PASS}"));
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.host()))
            .arg(format!("oci:{}:x", dest.display()));
        run_ok(&mut cmd);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs an axum app on a fresh loopback port in a background runtime.
fn serve(app: Router) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rt)
}

/// A distribution token service: checks Basic credentials, signs RS256 JWTs
/// with a self-signed certificate the registry trusts (`x5c` header).
pub struct TokenService {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    pub requests: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct TokenState {
    key: Arc<jsonwebtoken::EncodingKey>,
    cert_der_b64: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TokenService {
    fn start(dir: &Path) -> Self {
        self_signed(dir, "token", "/CN=kboot test token issuer");
        let der =
            run_ok(
                Command::new("openssl")
                    .current_dir(dir)
                    .args(["x509", "-in", "token.pem", "-outform", "der"]),
            )
            .stdout;
        let key_pem = std::fs::read(dir.join("token.key")).unwrap();
        let state = TokenState {
            key: Arc::new(jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).unwrap()),
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
            requests: Arc::default(),
        };
        let requests = state.requests.clone();
        let app = Router::new().route("/token", get(token)).with_state(state);
        let (addr, rt) = serve(app);
        Self {
            addr,
            cert: dir.join("token.pem"),
            requests,
            _rt: rt,
        }
    }

    /// Scopes asked for so far, one per token issued or refused.
    pub fn scopes(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn token(
    State(state): State<TokenState>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response<Body> {
    let scope = q.get("scope").cloned().unwrap_or_default();
    state.requests.lock().unwrap().push(scope.clone());
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    let authorized = headers.get("authorization").and_then(|h| h.to_str().ok()) == Some(expected.as_str());
    if !authorized {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .body(Body::from(r#"{"details":"bad credentials"}"#))
            .unwrap();
    }
    let mut access = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        let mut parts = s.splitn(3, ':');
        if let (Some(typ), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next()) {
            access.push(
                serde_json::json!({"type": typ, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}),
            );
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({
        "iss": "kboot-test-issuer", "sub": USER, "aud": "kboot-test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5c = Some(vec![state.cert_der_b64.clone()]);
    let jwt = jsonwebtoken::encode(&header, &claims, &state.key).unwrap();
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(
            serde_json::json!({"token": jwt, "expires_in": 300}).to_string(),
        ))
        .unwrap()
}

/// What the proxy does to answers.
#[derive(Debug, Clone)]
pub enum Fault {
    None,
    /// Cut the first `n` blob bodies over 1 MiB after half their bytes.
    CutMidBlob(usize),
    /// Flip one byte in every blob body bigger than 1 kB.
    CorruptByte,
    /// Answer 503 to the first `n` blob requests.
    Unavailable(usize),
    /// Answer 429 with `Retry-After: secs` to the first `n` blob requests.
    TooMany(usize, u64),
    /// Serve this body and content type for every manifest.
    Manifest(Vec<u8>, String),
    /// Stream blob bodies slowly: this many bytes per 50 ms.
    Slow(usize),
    /// Redirect blob requests (307) to this base URL, e.g. a [`Cdn`].
    RedirectBlobs(String),
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    fault: Arc<Mutex<Fault>>,
    blob_requests: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    ranges: Arc<Mutex<Vec<String>>>,
    client: reqwest::Client,
}

/// A plain-HTTP proxy to a registry on loopback that injects faults.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub fault: Arc<Mutex<Fault>>,
    /// `Range` headers of blob requests, in order ("" when absent).
    pub ranges: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: &Registry, fault: Fault) -> Self {
        let state = ProxyState {
            upstream: format!("http://{}", upstream.host()),
            fault: Arc::new(Mutex::new(fault)),
            blob_requests: Arc::default(),
            cuts: Arc::default(),
            ranges: Arc::default(),
            client: reqwest::Client::new(),
        };
        let (fault, ranges) = (state.fault.clone(), state.ranges.clone());
        let app = Router::new().fallback(any(proxy)).with_state(state);
        let (addr, rt) = serve(app);
        Self {
            addr,
            fault,
            ranges,
            _rt: rt,
        }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

async fn proxy(State(s): State<ProxyState>, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let is_blob = path.contains("/blobs/sha256:");
    let is_manifest = path.contains("/manifests/");
    let fault = s.fault.lock().unwrap().clone();
    if is_manifest {
        if let Fault::Manifest(body, ct) = &fault {
            return Response::builder()
                .header("content-type", ct.as_str())
                .body(Body::from(body.clone()))
                .unwrap();
        }
    }
    if let (true, Fault::RedirectBlobs(base)) = (is_blob, &fault) {
        return Response::builder()
            .status(307)
            .header("location", format!("{base}{path}"))
            .body(Body::empty())
            .unwrap();
    }
    let n = if is_blob {
        let range = req.headers().get("range").and_then(|v| v.to_str().ok()).unwrap_or("");
        s.ranges.lock().unwrap().push(range.to_string());
        s.blob_requests.fetch_add(1, Ordering::SeqCst)
    } else {
        usize::MAX
    };
    match fault {
        Fault::Unavailable(k) if n < k => {
            return Response::builder().status(503).body(Body::from("try later")).unwrap()
        }
        Fault::TooMany(k, secs) if n < k => {
            return Response::builder()
                .status(429)
                .header("retry-after", secs.to_string())
                .body(Body::from(r#"{"errors":[{"code":"TOOMANYREQUESTS"}]}"#))
                .unwrap()
        }
        _ => {}
    }
    let mut up = s.client.request(req.method().clone(), format!("{}{path}", s.upstream));
    for (k, v) in req.headers() {
        if k != "host" {
            up = up.header(k, v);
        }
    }
    let resp = up.send().await.unwrap();
    let mut out = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        if k != "transfer-encoding" && k != "connection" {
            out = out.header(k, v);
        }
    }
    let body = resp.bytes().await.unwrap().to_vec();
    let body = match fault {
        Fault::CutMidBlob(k) if is_blob && body.len() > (1 << 20) && s.cuts.fetch_add(1, Ordering::SeqCst) < k => {
            // Promise the full length, send half, let it reach the client,
            // then fail the stream: a connection cut in the middle of the blob.
            let half = body[..body.len() / 2].to_vec();
            let stream = futures_util::stream::iter(vec![Some(half), None]).then(|item| async move {
                match item {
                    Some(b) => Ok(b),
                    None => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut"))
                    }
                }
            });
            Body::from_stream(stream)
        }
        Fault::CorruptByte if is_blob && body.len() > 1024 => {
            let mut b = body;
            let mid = b.len() / 2;
            b[mid] ^= 0x01;
            Body::from(b)
        }
        Fault::Slow(per_tick) if is_blob => {
            let chunks: Vec<Vec<u8>> = body.chunks(per_tick.max(1)).map(|c| c.to_vec()).collect();
            let stream = futures_util::stream::iter(chunks).then(|c| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, std::io::Error>(c)
            });
            Body::from_stream(stream)
        }
        _ => Body::from(body),
    };
    out.body(body).unwrap()
}

#[derive(Clone)]
struct CdnState {
    upstream: String,
    seen_auth: Arc<Mutex<Vec<Option<String>>>>,
    client: reqwest::Client,
}

/// Another host serving the registry's blobs, as a CDN behind a redirect does.
/// It records the `Authorization` header of every request it gets, and
/// fetches from the (htpasswd) registry with the test credentials itself.
pub struct Cdn {
    pub addr: SocketAddr,
    pub seen_auth: Arc<Mutex<Vec<Option<String>>>>,
    _rt: tokio::runtime::Runtime,
}

impl Cdn {
    pub fn start(upstream: &Registry) -> Self {
        let state = CdnState {
            upstream: format!("http://{}", upstream.host()),
            seen_auth: Arc::default(),
            client: reqwest::Client::new(),
        };
        let seen_auth = state.seen_auth.clone();
        let app = Router::new().fallback(any(cdn)).with_state(state);
        let (addr, rt) = serve(app);
        Self {
            addr,
            seen_auth,
            _rt: rt,
        }
    }
}

async fn cdn(State(s): State<CdnState>, req: Request<Body>) -> Response<Body> {
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    s.seen_auth.lock().unwrap().push(auth);
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let mut up = s
        .client
        .get(format!("{}{path}", s.upstream))
        .basic_auth(USER, Some(PASS));
    if let Some(range) = req.headers().get("range") {
        up = up.header("range", range);
    }
    let resp = up.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    Response::builder().status(status).body(Body::from(body)).unwrap()
}
