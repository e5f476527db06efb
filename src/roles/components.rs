//! The containers and static pods of each role, with flags translated per version
//! (kube-deploy.md §10) for the hyperkube family.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use super::bootstrap;
use super::config::{NodeConfig, Role, CLUSTER_DNS, CLUSTER_DOMAIN, SERVICE_CIDR};
use super::images::{component_command, Images, FLANNEL_CNI_PLUGIN_IMAGE};
use super::render::yaml_file;
use super::version::Family;
use super::{KubeDirs, RoleError};
use crate::pki::{Authority, PkiLayout};
use crate::plan::{Device, Healthcheck, Plan, PlanFile, Propagation, RestartPolicy, Service, Volume};
use crate::state::Paths;

/// What every component builder reads.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a NodeConfig,
    pub paths: &'a Paths,
    pub dirs: &'a KubeDirs,
    pub layout: &'a PkiLayout,
    pub images: Images,
}

impl Ctx<'_> {
    fn v(&self, major: u32, minor: u32) -> bool {
        self.cfg.family == Family::Modern || self.cfg.k8s_version.at_least(major, minor)
    }
    fn pki(&self, stem: &str) -> String {
        self.layout.cert(stem).display().to_string()
    }
    fn key(&self, stem: &str) -> String {
        self.layout.key(stem).display().to_string()
    }
    fn ca(&self) -> String {
        self.layout.ca_cert(Authority::Kubernetes).display().to_string()
    }
    fn kubeconfig(&self, file: &str) -> String {
        self.layout.kubeconfig(file).display().to_string()
    }
    fn ip(&self) -> String {
        self.cfg.ip_address.to_string()
    }
    /// The kubeconfig this node's kubelet (and node-level agents) authenticate with.
    fn node_kubeconfig(&self) -> String {
        match self.cfg.role {
            Role::Master => self.kubeconfig("kubelet.conf"),
            Role::Worker => self.dirs.kubelet_kubeconfig().display().to_string(),
        }
    }
}

fn bind(src: impl AsRef<Path>, read_only: bool) -> Volume {
    Volume {
        source: src.as_ref().to_path_buf(),
        target: src.as_ref().to_path_buf(),
        read_only,
        propagation: Propagation::Private,
    }
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

// --- supervisor services ------------------------------------------------------------------

/// etcd with TLS for clients and peers, on the node's address and loopback only.
fn etcd(ctx: &Ctx) -> Service {
    let ip = ctx.ip();
    let etcd_ca = ctx.layout.ca_cert(Authority::Etcd).display().to_string();
    let data = ctx.paths.etcd_data();
    let command = vec![
        "/usr/local/bin/etcd".to_string(),
        flag("name", &ip),
        flag("data-dir", data.display()),
        flag(
            "listen-client-urls",
            format!("https://{ip}:2379,https://127.0.0.1:2379"),
        ),
        flag("advertise-client-urls", format!("https://{ip}:2379")),
        flag("listen-peer-urls", format!("https://{ip}:2380")),
        flag("initial-advertise-peer-urls", format!("https://{ip}:2380")),
        flag("initial-cluster", format!("{ip}=https://{ip}:2380")),
        flag("cert-file", ctx.pki("etcd/server")),
        flag("key-file", ctx.key("etcd/server")),
        flag("trusted-ca-file", &etcd_ca),
        "--client-cert-auth=true".into(),
        flag("peer-cert-file", ctx.pki("etcd/peer")),
        flag("peer-key-file", ctx.key("etcd/peer")),
        flag("peer-trusted-ca-file", &etcd_ca),
        "--peer-client-cert-auth=true".into(),
    ];
    // Every 10 s, as kubeadm probes its etcd: each check starts `kboot exec` and etcdctl (a
    // Go binary), which every 2 s was a steady load on small and emulated hosts, and nothing
    // waits on etcd's health but `kboot ps`.
    let interval = Duration::from_secs(10);
    let retries = (ctx.cfg.timeout_for_services.as_secs() / interval.as_secs()).max(1);
    Service {
        name: "etcd".into(),
        image: ctx.images.etcd.clone(),
        entrypoint: Some(command),
        command: Some(Vec::new()),
        environment: [("ETCDCTL_API".to_string(), "3".to_string())].into(),
        volumes: vec![bind(&data, false), bind(ctx.layout.dir().join("etcd"), true)],
        network_host: true,
        restart: ctx.cfg.restart,
        healthcheck: Some(Healthcheck {
            test: vec![
                "/usr/local/bin/etcdctl".into(),
                "--endpoints=https://127.0.0.1:2379".into(),
                flag("cacert", &etcd_ca),
                flag("cert", ctx.pki("etcd/healthcheck-client")),
                flag("key", ctx.key("etcd/healthcheck-client")),
                "endpoint".into(),
                "health".into(),
            ],
            interval,
            timeout: Duration::from_secs(5),
            retries: u32::try_from(retries).unwrap_or(u32::MAX),
            start_period: Duration::ZERO,
        }),
        ..Service::default()
    }
}

/// kube-deploy's `KUBELET_MOUNTS`, minus `/var/lib/docker` (no Docker), plus what a
/// modern kubelet reads. `/dev` is not bound (libcontainer would rewrite the host's
/// `/dev`); the privileged container gets the host's device nodes instead.
fn kubelet_volumes(ctx: &Ctx) -> Vec<Volume> {
    let d = ctx.dirs;
    let mut v = Vec::new();
    if ctx.cfg.use_containerized {
        v.push(Volume {
            source: "/".into(),
            target: "/rootfs".into(),
            read_only: true,
            propagation: Propagation::Private,
        });
    }
    v.extend([
        bind("/sys", false),
        bind("/var/run", false),
        bind("/run", false),
        Volume {
            propagation: if ctx.cfg.use_containerized {
                Propagation::Slave
            } else {
                Propagation::Shared
            },
            ..bind(&d.kubelet, false)
        },
        bind(&d.container_logs, false),
        bind(&d.pod_logs, false),
        bind(&d.etc, true),
        bind(&d.cni_conf, true),
        bind(&d.cni_bin, true),
        bind("/lib/modules", true),
        bind(ctx.layout.dir(), true),
        // The kubelet gives pods the host's resolver (`resolvConf`, dnsPolicy Default and the
        // upstream of ClusterFirst) and hostNetwork pods the host's /etc/hosts; Docker gave
        // kube-deploy's kubelet container both.
        bind("/etc/resolv.conf", true),
        bind("/etc/hosts", true),
    ]);
    // The CRI socket lives under /run by default; a moved state dir must be bound explicitly.
    if !ctx.paths.state().starts_with("/run") {
        v.push(bind(ctx.paths.state(), false));
    }
    v
}

fn kubelet_config(ctx: &Ctx) -> Value {
    let cri = format!("unix://{}", ctx.paths.cri_socket().display());
    let mut config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": cri,
        "imageServiceEndpoint": cri,
        "staticPodPath": ctx.dirs.manifests(),
        "cgroupDriver": ctx.cfg.cgroup_driver.as_str(),
        "clusterDNS": [CLUSTER_DNS.to_string()],
        "clusterDomain": CLUSTER_DOMAIN,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": ctx.ca()},
        },
        "authorization": {"mode": "Webhook"},
        "readOnlyPort": 0,
        // How often the kubelet recomputes its node status (it posts only changes, plus a
        // report every 5 min). After a restart the Node in etcd still says Ready, which ends
        // the kubelet's fast start-up updates; the first real Ready then waits for this tick
        // (default 10s).
        "nodeStatusUpdateFrequency": "2s",
        "rotateCertificates": true,
        // Images kboot built locally cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "evictionHard": {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%"},
        "localStorageCapacityIsolation": false,
    });
    // Kubelets from v1.35 refuse cgroup v1 unless told otherwise; on a v2 host the kubelet
    // keeps its own default, so a later kubelet's stricter checks are not silenced.
    if !ctx.cfg.cgroup_unified {
        config["failCgroupV1"] = json!(false);
    }
    config
}

/// kubelet flags for the hyperkube family, translated per version (kube-deploy.md §10).
fn hyperkube_kubelet_flags(ctx: &Ctx, args: &mut Vec<String>) {
    let cfg = ctx.cfg;
    let v = |mi| cfg.k8s_version.at_least(1, mi);
    let manifests = ctx.dirs.manifests().display().to_string();
    args.push(if v(6) {
        flag("pod-manifest-path", &manifests)
    } else {
        // Before v1.6, --config meant the static pod directory.
        flag("config", &manifests)
    });
    if !v(8) {
        args.push(flag("api-servers", format!("https://{}:6443", cfg.master_ip)));
    }
    if v(6) && !v(10) {
        args.push("--require-kubeconfig".into());
    }
    if !v(15) {
        args.push("--allow-privileged=true".into());
    }
    args.push(flag("cluster-dns", CLUSTER_DNS));
    args.push(flag("cluster-domain", CLUSTER_DOMAIN));
    if v(5) {
        // Kubelet client-certificate authentication and webhook authorization arrived in v1.5.
        args.push(flag("client-ca-file", ctx.ca()));
        args.push("--anonymous-auth=false".into());
        args.push("--authorization-mode=Webhook".into());
    }
    args.push("--read-only-port=0".into());
    if v(10) {
        let cri = format!("unix://{}", ctx.paths.cri_socket().display());
        args.push("--container-runtime=remote".into());
        args.push(flag("container-runtime-endpoint", &cri));
        args.push(flag("image-service-endpoint", &cri));
    }
    if v(8) {
        args.push("--rotate-certificates=true".into());
    }
    if cfg.use_containerized {
        args.push("--containerized".into());
    }
}

fn kubelet(ctx: &Ctx) -> Service {
    let cfg = ctx.cfg;
    let mut args = component_command(cfg, "kubelet");
    let kubeconfig = ctx.node_kubeconfig();
    match cfg.family {
        Family::Modern => args.push(flag("config", ctx.dirs.kubelet_config().display())),
        Family::Hyperkube => hyperkube_kubelet_flags(ctx, &mut args),
    }
    args.push(flag("kubeconfig", &kubeconfig));
    if cfg.role == Role::Worker {
        let name = if ctx.v(1, 8) {
            "bootstrap-kubeconfig"
        } else {
            "experimental-bootstrap-kubeconfig"
        };
        args.push(flag(name, ctx.layout.bootstrap_kubeconfig().display()));
        args.push(flag("cert-dir", ctx.dirs.kubelet_cert_dir().display()));
    }
    args.push(flag("hostname-override", ctx.ip()));
    args.push(flag("node-ip", ctx.ip()));
    args.push("--v=2".into());
    Service {
        name: "kubelet".into(),
        image: ctx.images.kubelet.clone(),
        entrypoint: Some(args),
        command: Some(Vec::new()),
        volumes: kubelet_volumes(ctx),
        network_host: true,
        pid_host: true,
        privileged: true,
        devices: vec![Device {
            // The kubelet's OOM watcher reads the kernel log; without it the kubelet exits.
            host: "/dev/kmsg".into(),
            container: "/dev/kmsg".into(),
            permissions: "r".into(),
        }],
        restart: cfg.restart,
        depends_on: if cfg.role == Role::Master {
            vec!["etcd".into()]
        } else {
            Vec::new()
        },
        ..Service::default()
    }
}

/// flanneld with the Kubernetes subnet manager: node subnets come from the node objects
/// (the controller-manager allocates them), so workers need no etcd access.
fn flannel(ctx: &Ctx) -> Vec<Service> {
    let cfg = ctx.cfg;
    let conf_dir = ctx
        .dirs
        .flannel_conf()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut volumes = vec![
        bind(&ctx.dirs.flannel_run, false),
        bind(&conf_dir, true),
        bind(ctx.layout.dir(), true),
    ];
    if cfg.role == Role::Worker {
        volumes.push(bind(&ctx.dirs.kubelet, true));
    }
    let plugin = Service {
        name: "flannel-cni-plugin".into(),
        image: FLANNEL_CNI_PLUGIN_IMAGE.into(),
        entrypoint: Some(vec![
            "cp".into(),
            "-f".into(),
            "/flannel".into(),
            ctx.dirs.cni_bin.join("flannel").display().to_string(),
        ]),
        command: Some(Vec::new()),
        volumes: vec![bind(&ctx.dirs.cni_bin, false)],
        restart: RestartPolicy::OnFailure { max_retries: Some(5) },
        ..Service::default()
    };
    let flanneld = Service {
        name: "flannel".into(),
        image: ctx.images.flannel.clone(),
        entrypoint: Some(vec![
            "/opt/bin/flanneld".into(),
            "--kube-subnet-mgr".into(),
            flag("kubeconfig-file", ctx.node_kubeconfig()),
            flag("net-config-path", ctx.dirs.flannel_conf().display()),
            flag("iface", ctx.ip()),
            flag("ip-masq", cfg.flannel_ipmasq),
        ]),
        command: Some(Vec::new()),
        // flanneld outside a pod learns its node name from the environment.
        environment: [("NODE_NAME".to_string(), ctx.ip())].into(),
        volumes,
        network_host: true,
        privileged: true,
        devices: vec![Device {
            host: "/dev/net/tun".into(),
            container: "/dev/net/tun".into(),
            permissions: "rwm".into(),
        }],
        restart: cfg.restart,
        // Not on `flannel-cni-plugin`: a dependency must be running, and that one-shot exits
        // once it has copied the plugin (flanneld never started with it; the e2e run found it).
        depends_on: vec!["kubelet".into()],
        ..Service::default()
    };
    vec![plugin, flanneld]
}

/// The pod network without flannel (`USE_CNI=false`), kube-deploy's `docker0`: a bridge on
/// this node with the node's pod subnet (`{{.PodCIDR}}`, which kboot's CRI fills in from
/// the kubelet's `UpdateRuntimeConfig` once the controller-manager has allocated it), NAT to
/// the outside as `FLANNEL_IPMASQ` says, host ports. Routes between nodes' subnets are not
/// set up: that is what `USE_CNI` (flannel) is for.
fn bridge_conflist(ctx: &Ctx) -> PlanFile {
    let conflist = json!({
        "cniVersion": "0.4.0",
        "name": "kboot",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": ctx.cfg.flannel_ipmasq,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ctx.paths.cni_data(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    PlanFile {
        path: ctx.dirs.bridge_conflist(),
        mode: 0o644,
        content: serde_json::to_string_pretty(&conflist).unwrap_or_default() + "\n",
    }
}

fn flannel_files(ctx: &Ctx) -> Result<Vec<PlanFile>, RoleError> {
    let net_conf = json!({
        "Network": ctx.cfg.flannel_network.to_string(),
        "Backend": {"Type": ctx.cfg.flannel_backend.as_str()},
    });
    // The plugin's per-container state and the delegated host-local allocations live under
    // --root like the bridge network's (`down --purge` removes them, and two roles on one host,
    // as in the e2e test, do not share `/var/lib/cni`).
    let data = ctx.paths.cni_data();
    let conflist = json!({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {
                "type": "flannel",
                "dataDir": data.join("flannel"),
                "ipam": {"type": "host-local", "dataDir": data.join("networks")},
                "delegate": {"hairpinMode": true, "isDefaultGateway": true},
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    });
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    Ok(vec![
        PlanFile {
            path: ctx.dirs.flannel_conf(),
            mode: 0o644,
            content: pretty(&net_conf),
        },
        PlanFile {
            path: ctx.dirs.flannel_conflist(),
            mode: 0o644,
            content: pretty(&conflist),
        },
    ])
}

// --- static pods ------------------------------------------------------------------------------

fn host_path_volume(name: &str, path: impl AsRef<Path>, kind: &str) -> Value {
    json!({"name": name, "hostPath": {"path": path.as_ref(), "type": kind}})
}

fn static_pod(
    ctx: &Ctx,
    name: &str,
    image: &str,
    command: Vec<String>,
    privileged: bool,
    extra: &[(&str, PathBuf, bool)],
) -> Value {
    let pki = ctx.layout.dir();
    let mut volumes = vec![host_path_volume("pki", pki, "Directory")];
    let mut mounts = vec![json!({"name": "pki", "mountPath": pki, "readOnly": true})];
    for (vname, path, ro) in extra {
        let kind = if path.extension().is_some() {
            "FileOrCreate"
        } else {
            "DirectoryOrCreate"
        };
        volumes.push(host_path_volume(vname, path, kind));
        mounts.push(json!({"name": vname, "mountPath": path, "readOnly": ro}));
    }
    let mut container = json!({
        "name": name,
        "image": image,
        "command": command,
        "volumeMounts": mounts,
    });
    if privileged {
        container["securityContext"] = json!({"privileged": true});
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"component": name, "tier": if name == "kube-proxy" { "node" } else { "control-plane" }},
        },
        "spec": {
            "hostNetwork": true,
            "containers": [container],
            "volumes": volumes,
        },
    });
    if ctx.v(1, 11) {
        // Pod priority is on by default from v1.11; before, the class name would be rejected.
        pod["spec"]["priorityClassName"] = json!("system-node-critical");
    }
    pod
}

fn apiserver_args(ctx: &Ctx) -> Vec<String> {
    let cfg = ctx.cfg;
    let etcd_ca = ctx.layout.ca_cert(Authority::Etcd).display().to_string();
    let mut a = component_command(cfg, "kube-apiserver");
    a.extend([
        flag("advertise-address", cfg.master_ip),
        "--bind-address=0.0.0.0".into(),
        "--secure-port=6443".into(),
        "--allow-privileged=true".into(),
    ]);
    a.push(flag(
        "authorization-mode",
        if ctx.v(1, 7) {
            "Node,RBAC"
        } else if ctx.v(1, 6) {
            "RBAC"
        } else {
            "AlwaysAllow"
        },
    ));
    a.push(flag("client-ca-file", ctx.ca()));
    if ctx.v(1, 10) {
        a.push("--enable-admission-plugins=NodeRestriction".into());
    } else {
        let mut plugins = "NamespaceLifecycle,LimitRanger,ServiceAccount,ResourceQuota".to_string();
        if ctx.v(1, 7) {
            plugins.push_str(",NodeRestriction");
        }
        a.push(flag("admission-control", plugins));
    }
    if ctx.v(1, 8) {
        a.push("--enable-bootstrap-token-auth=true".into());
    } else if ctx.v(1, 6) {
        a.push("--experimental-bootstrap-token-auth=true".into());
    }
    a.extend([
        flag("etcd-servers", format!("https://{}:2379", cfg.ip_address)),
        flag("etcd-cafile", etcd_ca),
        flag("etcd-certfile", ctx.pki("apiserver-etcd-client")),
        flag("etcd-keyfile", ctx.key("apiserver-etcd-client")),
    ]);
    if cfg.family == Family::Hyperkube {
        // Before v1.20 the apiserver also listened without TLS or auth on 127.0.0.1:8080.
        a.push("--insecure-port=0".into());
    }
    a.extend([
        flag("kubelet-client-certificate", ctx.pki("apiserver-kubelet-client")),
        flag("kubelet-client-key", ctx.key("apiserver-kubelet-client")),
        "--kubelet-preferred-address-types=InternalIP,Hostname".into(),
    ]);
    if ctx.v(1, 7) {
        a.extend([
            flag("proxy-client-cert-file", ctx.pki("front-proxy-client")),
            flag("proxy-client-key-file", ctx.key("front-proxy-client")),
            flag(
                "requestheader-client-ca-file",
                ctx.layout.ca_cert(Authority::FrontProxy).display(),
            ),
            "--requestheader-allowed-names=front-proxy-client".into(),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
        ]);
    }
    a.push(flag("service-account-key-file", ctx.layout.sa_pub().display()));
    if cfg.family == Family::Modern {
        a.extend([
            flag("service-account-signing-key-file", ctx.layout.sa_key().display()),
            flag(
                "service-account-issuer",
                format!("https://kubernetes.default.svc.{CLUSTER_DOMAIN}"),
            ),
        ]);
    }
    a.extend([
        flag("service-cluster-ip-range", SERVICE_CIDR),
        flag("tls-cert-file", ctx.pki("apiserver")),
        flag("tls-private-key-file", ctx.key("apiserver")),
        "--v=2".into(),
    ]);
    a
}

/// Secure serving on loopback, authenticating and authorizing its callers through the apiserver.
fn delegated_auth(kubeconfig: &str) -> [String; 3] {
    [
        flag("authentication-kubeconfig", kubeconfig),
        flag("authorization-kubeconfig", kubeconfig),
        "--bind-address=127.0.0.1".into(),
    ]
}

fn controller_manager_args(ctx: &Ctx) -> Vec<String> {
    let cfg = ctx.cfg;
    let kc = ctx.kubeconfig("controller-manager.conf");
    let mut a = component_command(cfg, "kube-controller-manager");
    a.push(flag("kubeconfig", &kc));
    if ctx.v(1, 8) {
        a.extend(delegated_auth(&kc));
        a.extend([
            flag("client-ca-file", ctx.ca()),
            flag(
                "requestheader-client-ca-file",
                ctx.layout.ca_cert(Authority::FrontProxy).display(),
            ),
        ]);
    }
    a.extend([
        "--leader-elect=true".into(),
        flag("root-ca-file", ctx.ca()),
        flag("service-account-private-key-file", ctx.layout.sa_key().display()),
        flag("service-cluster-ip-range", SERVICE_CIDR),
    ]);
    if ctx.v(1, 6) {
        a.extend([
            flag("cluster-signing-cert-file", ctx.ca()),
            flag("cluster-signing-key-file", ctx.key("ca")),
            "--use-service-account-credentials=true".into(),
        ]);
    }
    if ctx.v(1, 7) {
        // bootstrapsigner signs cluster-info for joining workers; tokencleaner drops expired tokens.
        a.push("--controllers=*,bootstrapsigner,tokencleaner".into());
    }
    // Each node gets a subnet of the pod network: flannel's (USE_CNI) and the bridge
    // network's `{{.PodCIDR}}` both read it from the Node object.
    a.extend([
        "--allocate-node-cidrs=true".into(),
        flag("cluster-cidr", cfg.flannel_network),
    ]);
    if let Some(mask) = node_cidr_mask_size(cfg.flannel_network.prefix) {
        a.push(flag("node-cidr-mask-size", mask));
    }
    a.push("--v=2".into());
    a
}

/// The per-node subnet size when the controller-manager's default (/24) would leave room
/// for fewer than four nodes in the pod network: a quarter of the network (at most /30).
fn node_cidr_mask_size(network_prefix: u8) -> Option<u8> {
    (network_prefix > 22).then(|| (network_prefix + 2).min(30))
}

fn scheduler_args(ctx: &Ctx) -> Vec<String> {
    let kc = ctx.kubeconfig("scheduler.conf");
    let mut a = component_command(ctx.cfg, "kube-scheduler");
    a.push(flag("kubeconfig", &kc));
    if ctx.v(1, 8) {
        a.extend(delegated_auth(&kc));
    }
    a.extend(["--leader-elect=true".into(), "--v=2".into()]);
    a
}

fn proxy_args(ctx: &Ctx) -> Vec<String> {
    let kubeconfig = match ctx.cfg.role {
        Role::Master => ctx.kubeconfig("kube-proxy.conf"),
        Role::Worker => ctx.node_kubeconfig(),
    };
    let mut a = component_command(ctx.cfg, "kube-proxy");
    a.push(flag("kubeconfig", kubeconfig));
    a.push(flag("hostname-override", ctx.ip()));
    a.push(flag("cluster-cidr", ctx.cfg.flannel_network));
    a.push("--v=2".into());
    a
}

fn proxy_pod(ctx: &Ctx) -> Result<PlanFile, RoleError> {
    let mut extra = vec![
        ("lib-modules", PathBuf::from("/lib/modules"), true),
        ("xtables-lock", PathBuf::from("/run/xtables.lock"), false),
    ];
    if ctx.cfg.role == Role::Worker {
        // The worker's kube-proxy uses the node credential the kubelet got by TLS bootstrapping.
        extra.push(("kubelet", ctx.dirs.kubelet.clone(), true));
    }
    let pod = static_pod(ctx, "kube-proxy", &ctx.images.proxy, proxy_args(ctx), true, &extra);
    yaml_file(ctx.dirs.manifests().join("kube-proxy.yaml"), &pod)
}

/// Services and files shared by both roles: kubelet, its config, kube-proxy, flannel.
fn node(ctx: &Ctx, plan: &mut Plan) -> Result<(), RoleError> {
    if ctx.cfg.family == Family::Modern {
        plan.files
            .push(yaml_file(ctx.dirs.kubelet_config(), &kubelet_config(ctx))?);
    }
    plan.files.push(proxy_pod(ctx)?);
    plan.services.push(kubelet(ctx));
    if ctx.cfg.use_cni {
        plan.files.extend(flannel_files(ctx)?);
        plan.services.extend(flannel(ctx));
    } else {
        plan.files.push(bridge_conflist(ctx));
    }
    Ok(())
}

pub(crate) fn master(ctx: &Ctx, plan: &mut Plan) -> Result<(), RoleError> {
    plan.services.push(etcd(ctx));
    let m = ctx.dirs.manifests();
    let im = &ctx.images;
    for (name, image, args) in [
        ("kube-apiserver", &im.apiserver, apiserver_args(ctx)),
        (
            "kube-controller-manager",
            &im.controller_manager,
            controller_manager_args(ctx),
        ),
        ("kube-scheduler", &im.scheduler, scheduler_args(ctx)),
    ] {
        let pod = static_pod(ctx, name, image, args, false, &[]);
        plan.files.push(yaml_file(m.join(format!("{name}.yaml")), &pod)?);
    }
    node(ctx, plan)?;
    if super::supports_secure_join(ctx.cfg) {
        plan.files.push(bootstrap::rbac_file(ctx.paths)?);
        if let Some(file) = super::dns::addon_file(ctx.cfg, ctx.paths) {
            plan.files.push(file?);
        }
        plan.services.push(bootstrap::apply_service(
            ctx.cfg,
            ctx.paths,
            &ctx.layout.kubeconfig("admin.conf"),
            im,
        ));
    }
    Ok(())
}

pub(crate) fn worker(ctx: &Ctx, plan: &mut Plan) -> Result<(), RoleError> {
    node(ctx, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::config::{tests::config, Key};

    fn plan(pairs: &[(Key, &str)]) -> (crate::roles::RolePlan, KubeDirs) {
        let cfg = config(Role::Master, pairs);
        let dirs = KubeDirs::default();
        (
            crate::roles::build(&cfg, &Paths::under("/tmp/kb"), &dirs).unwrap(),
            dirs,
        )
    }

    fn manifest_args(plan: &crate::roles::RolePlan, name: &str) -> String {
        let file = plan
            .plan
            .files
            .iter()
            .find(|f| f.path.ends_with(format!("{name}.yaml")));
        file.map(|f| f.content.clone()).unwrap_or_default()
    }

    #[test]
    fn without_flannel_the_node_gets_a_bridge_network_on_its_allocated_pod_cidr() {
        let (plan, dirs) = plan(&[]);
        let file = plan.plan.files.iter().find(|f| f.path == dirs.bridge_conflist());
        let conf: Value = serde_json::from_str(&file.expect("bridge conflist").content).unwrap();
        let bridge = &conf["plugins"][0];
        assert_eq!(bridge["type"], "bridge");
        assert_eq!(bridge["ipMasq"], true, "FLANNEL_IPMASQ defaults to true");
        // kboot's CRI substitutes the node's CIDR from the kubelet's UpdateRuntimeConfig.
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "{{.PodCIDR}}");
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/kb/root/cni", "under --root");
        assert_eq!(conf["plugins"][1]["type"], "portmap");
        let cm = manifest_args(&plan, "kube-controller-manager");
        assert!(
            cm.contains("--allocate-node-cidrs=true") && cm.contains("--cluster-cidr=10.1.0.0/16"),
            "{cm}"
        );
        assert!(!cm.contains("node-cidr-mask-size"), "the default /24 fits a /16");
        assert!(manifest_args(&plan, "kube-proxy").contains("--cluster-cidr=10.1.0.0/16"));
        assert!(!plan.plan.services.iter().any(|s| s.name == "flannel"));
    }

    #[test]
    fn services_depend_only_on_services_that_keep_running() {
        // The supervisor starts a service once its dependencies run; a one-shot dependency
        // (it exits when done) would hold the service back forever.
        let (plan, _) = plan(&[(Key::UseCni, "true")]);
        let services = &plan.plan.services;
        for s in services {
            for d in &s.depends_on {
                let dep = services.iter().find(|x| &x.name == d).expect("dependency in the plan");
                assert!(
                    !matches!(dep.restart, RestartPolicy::No | RestartPolicy::OnFailure { .. }),
                    "{} depends on the one-shot {d}",
                    s.name
                );
            }
        }
        let flannel = services.iter().find(|s| s.name == "flannel").expect("flannel");
        assert_eq!(flannel.depends_on, ["kubelet"]);
    }

    #[test]
    fn with_flannel_there_is_no_bridge_network() {
        let (plan, dirs) = plan(&[(Key::UseCni, "true"), (Key::FlannelIpmasq, "false")]);
        assert!(!plan.plan.files.iter().any(|f| f.path == dirs.bridge_conflist()));
        assert!(plan.plan.files.iter().any(|f| f.path == dirs.flannel_conflist()));
    }

    #[test]
    fn a_small_pod_network_gets_node_subnets_that_fit() {
        assert_eq!(node_cidr_mask_size(16), None);
        assert_eq!(node_cidr_mask_size(22), None);
        assert_eq!(node_cidr_mask_size(24), Some(26));
        assert_eq!(node_cidr_mask_size(28), Some(30));
        let (plan, _) = plan(&[(Key::FlannelNetwork, "10.9.0.0/24")]);
        assert!(manifest_args(&plan, "kube-controller-manager").contains("--node-cidr-mask-size=26"));
    }

    fn kubelet_config_of(plan: &crate::roles::RolePlan, dirs: &KubeDirs) -> serde_norway::Value {
        let f = plan
            .plan
            .files
            .iter()
            .find(|f| f.path == dirs.kubelet_config())
            .unwrap();
        serde_norway::from_str(&f.content).unwrap()
    }

    #[test]
    fn the_kubelet_uses_the_nodes_cgroup_driver() {
        let (p, dirs) = plan(&[]);
        assert_eq!(
            kubelet_config_of(&p, &dirs)["cgroupDriver"],
            "cgroupfs",
            "the test host has no systemd"
        );
        let (p, dirs) = plan(&[(Key::CgroupDriver, "systemd")]);
        assert_eq!(kubelet_config_of(&p, &dirs)["cgroupDriver"], "systemd");
    }

    #[test]
    fn the_kubelet_is_told_to_accept_cgroup_v1_only_on_a_v1_host() {
        let (p, dirs) = plan(&[]);
        assert_eq!(
            kubelet_config_of(&p, &dirs)["failCgroupV1"],
            false,
            "the test host is hybrid v1"
        );
        let mut cfg = config(Role::Master, &[]);
        cfg.cgroup_unified = true;
        let p = crate::roles::build(&cfg, &Paths::under("/tmp/kb"), &dirs).unwrap();
        let kubelet = kubelet_config_of(&p, &dirs);
        assert!(kubelet.get("failCgroupV1").is_none(), "{kubelet:?}");
    }

    #[test]
    fn the_kubelet_sees_the_hosts_resolver_and_hosts_file_read_only() {
        let (plan, _) = plan(&[]);
        let kubelet = plan.plan.services.iter().find(|s| s.name == "kubelet").unwrap();
        for f in ["/etc/resolv.conf", "/etc/hosts"] {
            let v = kubelet.volumes.iter().find(|v| v.target == Path::new(f));
            assert!(v.is_some_and(|v| v.read_only && v.source == Path::new(f)), "{f}");
        }
    }
}
