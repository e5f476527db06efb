# containerd as a peer for the benches (sourced by bench/cri.sh and bench/density.sh): Debian's
# containerd 1.6 with its CRI plugin, runc through containerd-shim-runc-v2, cgroupfs, the
# overlayfs snapshotter, everything under one directory of the bench's own.
# shellcheck shell=bash

# containerd_config DIR SOCKET REGISTRY SANDBOX_IMAGE CNI_CONF_DIR: writes DIR/config.toml
# (root, state, runc root and opt under DIR) and DIR/certs.d, where docker.io and
# registry.k8s.io are pulled from REGISTRY (host:port, plain HTTP) as a mirror.
containerd_config() {
  local dir=$1 sock=$2 reg=$3 sandbox=$4 netd=$5 r
  for r in docker.io registry.k8s.io; do
    mkdir -p "$dir/certs.d/$r"
    printf 'server = "https://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$r" "$reg" \
      > "$dir/certs.d/$r/hosts.toml"
  done
  cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$sandbox"
  disable_apparmor = true
  # root here lacks CAP_SYS_RESOURCE (machine-notes), so the sandbox's oom_score_adj of
  # -998 cannot be set and runc fails; this keeps it at or above the current value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$netd"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
TOML
}
