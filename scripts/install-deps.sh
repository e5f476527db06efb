#!/usr/bin/env bash
# Installs everything kboot's build and test suite need on a fresh Debian 12 host.
# Idempotent: packages already present are skipped quickly. Needs root.
set -euo pipefail

# The build's own packages (C toolchain, libseccomp.a) come from build-deps.sh.
"$(dirname "$0")/build-deps.sh"

APT_PACKAGES=(
  docker-registry apache2-utils openssl                           # registry tests (htpasswd, TLS)
  skopeo umoci                                                    # differential tests and benchmarks
  runc crun                                                       # differential container tests
  containerd                                                      # bench/cri.sh: the peer CRI runtime (no daemon is started by the package here)
  busybox-static etcd-server etcd-client                          # test images
  iproute2 iptables cpio xz-utils zstd hyperfine time             # networking, archives, benchmarks
  containernetworking-plugins                                     # CRI tests: bridge, host-local, loopback, portmap in /usr/lib/cni
  systemd groff-base                                              # service tests: systemd-analyze verify (no systemd as PID 1 needed), groff
  qemu-system-x86 qemu-utils mmdebstrap                           # scripts/vm.sh: the cgroup v2 + systemd guest (its kernel comes from its own rootfs)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "install-deps: cargo not found; install Rust stable (rustup) first" >&2; exit 1; }
# crictl and critest for the CRI tests (cached after the first build).
"$(dirname "$0")/build-k8s.sh" --only cri-tools
echo "install-deps: ok"
