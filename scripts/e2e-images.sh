#!/usr/bin/env bash
# Assembles every image `kboot run master|worker` uses for the pinned Kubernetes version,
# under the UPSTREAM names, from binaries built by scripts/build-k8s.sh and Debian packages;
# serves them from Debian's docker-registry on loopback; writes a kboot config dir whose
# registries.toml mirrors registry.k8s.io, ghcr.io, docker.io, … to that registry. So the
# plan that runs is the one a user on the internet gets, only the bytes come from here.
#
#   scripts/e2e-images.sh            # build (cached), start the registry, push, write config
#   scripts/e2e-images.sh --stop     # stop the registry this script started
#
# Environment: K8S_VERSION (v1.34.4), ETCD_VERSION (v3.6.4, the built binary),
# E2E_DIR (/var/tmp/kboot-e2e), E2E_REGISTRY_PORT (5055), KBOOT_BUILD_CACHE.
# Output: $E2E_DIR/config/registries.toml, registry pid in $E2E_DIR/registry.pid.
# Cache: $KBOOT_BUILD_CACHE/e2e-images/<key>/ holds the OCI layouts; <key> hashes the
# versions and the sizes+mtimes of the input binaries, and each image is also keyed by its
# build arguments, so an image is rebuilt (and pushed again) only when its inputs change.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
. "$HERE/lib/images.sh"
K8S_VERSION=${K8S_VERSION:-v1.34.4}
ETCD_VERSION=${ETCD_VERSION:-v3.6.4}
CACHE=${KBOOT_BUILD_CACHE:-/var/cache/kboot-build}
E2E_DIR=${E2E_DIR:-/var/tmp/kboot-e2e}
PORT=${E2E_REGISTRY_PORT:-5055}
REG=127.0.0.1:$PORT
K8S_BIN=$CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/bin
FLANNEL_VERSION=${FLANNEL_VERSION:-v0.26.7}
FLANNEL_BIN=$CACHE/flannel-$FLANNEL_VERSION/bin
log() { echo "e2e-images: $*" >&2; }

stop_registry() {
  local pidf=$E2E_DIR/registry.pid
  if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
    kill "$(cat "$pidf")" && log "registry stopped"
  fi
  rm -f "$pidf"
}
if [ "${1:-}" = "--stop" ]; then stop_registry; exit 0; fi

[ -x "$K8S_BIN/kubelet" ] && [ -x "$ETCD_BIN/etcd" ] && [ -x "$COREDNS_BIN/coredns" ] && [ -x "$FLANNEL_BIN/flanneld" ] \
  || "$HERE/build-k8s.sh" "$K8S_VERSION"
command -v docker-registry >/dev/null || { log "docker-registry missing: scripts/install-deps.sh"; exit 1; }

RT=${CARGO_TARGET_DIR:-$REPO/target}/debug/rootfs-tools
KBOOT=${CARGO_TARGET_DIR:-$REPO/target}/debug/kboot
(cd "$REPO" && cargo build -q -p rootfs-tools -p kboot 2>/dev/null || cargo build -p rootfs-tools -p kboot)

# The images the default plans use, read from the plans themselves (plus the worker's), with
# and without USE_CNI (flannel).
images=$(for role in master worker; do for cni in false true; do
  "$KBOOT" plan "$role" --k8s-version "$K8S_VERSION" --master 10.213.0.1 --ip-address 10.213.0.2 \
    --token abcdef.0123456789abcdef --ca-cert-hash sha256:$(printf '0%.0s' {1..64}) --use-cni="$cni" --format json
done; done | python3 -c '
import json, sys
dec = json.JSONDecoder(); text = sys.stdin.read(); i = 0; seen = set()
while i < len(text):
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    plan, i = dec.raw_decode(text, i)
    for s in plan["services"]: seen.add(s["image"])
    for f in plan["files"]:
        for line in f["content"].splitlines():
            if line.strip().startswith("image:"): seen.add(line.split("image:", 1)[1].strip())
print("\n".join(sorted(seen)))')
log "plan images: $(echo $images)"

key=$( { echo "$K8S_VERSION $ETCD_VERSION"; stat -c '%n %s %Y' "$K8S_BIN"/* "$ETCD_BIN"/* "$COREDNS_BIN"/* "$FLANNEL_BIN"/* /bin/busybox; } \
       | sha256sum | cut -c1-16)
OUT=$CACHE/e2e-images/$key
mkdir -p "$OUT" "$E2E_DIR"

# name -> rootfs-tools arguments. Binaries go to /usr/local/bin like upstream's images.
PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
args_for() {
  local ref=$1 repo=${1%:*}
  case "$repo" in
    */kube-apiserver|*/kube-controller-manager|*/kube-scheduler)
      local b=${repo##*/}
      echo "--add $K8S_BIN/$b:/usr/local/bin/$b:755 --entrypoint /usr/local/bin/$b" ;;
    */kube-proxy)
      # iptables-restore/nft and conntrack are exec'd by kube-proxy; Debian's with their libs.
      echo "--add $K8S_BIN/kube-proxy:/usr/local/bin/kube-proxy:755 --apt iptables --apt nftables --apt conntrack --apt-exclude debconf --add $XT_LINKS:/ --entrypoint /usr/local/bin/kube-proxy" ;;
    */kubectl)
      echo "--add $K8S_BIN/kubectl:/usr/local/bin/kubectl:755 --add $K8S_BIN/kubectl:/bin/kubectl:755 --entrypoint /usr/local/bin/kubectl" ;;
    */etcd)
      echo "--add $ETCD_BIN/etcd:/usr/local/bin/etcd:755 --add $ETCD_BIN/etcdctl:/usr/local/bin/etcdctl:755 --entrypoint /usr/local/bin/etcd" ;;
    */kubelet)
      # What the kubelet execs: mount/umount (volumes), iptables, ip, nsenter, losetup, find, du.
      # (/etc/resolv.conf and /etc/hosts are the host's, bound by the role's kubelet service.)
      echo "--add $K8S_BIN/kubelet:/usr/local/bin/kubelet:755 --add $BB_ROOT:/ --apt mount --apt iptables --apt iproute2 --apt-exclude debconf --add $XT_LINKS:/ --entrypoint /usr/local/bin/kubelet" ;;
    */coredns/coredns)
      # As upstream's image: the static binary as the entrypoint, nothing else.
      echo "--add $COREDNS_BIN/coredns:/coredns:755 --entrypoint /coredns" ;;
    */flannel)
      # As upstream's: flanneld in /opt/bin; iptables for --ip-masq and the forward rules
      # (Debian's, with the alternatives links), busybox for a shell.
      echo "--add $FLANNEL_BIN/flanneld:/opt/bin/flanneld:755 --add $BB_ROOT:/ --apt iptables --apt-exclude debconf --add $XT_LINKS:/ --entrypoint /opt/bin/flanneld" ;;
    */flannel-cni-plugin)
      # As upstream's: the plugin as /flannel and busybox's cp, which the role runs to install it.
      echo "--add $BB_ROOT:/ --add $FLANNEL_BIN/flannel:/flannel:755 --cmd sh" ;;
    *) echo "--add $BB_ROOT:/ --cmd sh" ;;
  esac
}

# A busybox tree (Debian busybox-static with its applet links): the test workloads' image and
# the shell tools in the kubelet's image.
BB_ROOT=$OUT/busybox-root
if [ ! -x "$BB_ROOT/bin/sh" ]; then
  rm -rf "$BB_ROOT"; mkdir -p "$BB_ROOT/bin" "$BB_ROOT/etc" "$BB_ROOT/tmp"
  cp /bin/busybox "$BB_ROOT/bin/busybox"
  for a in $(/bin/busybox --list); do [ -e "$BB_ROOT/bin/$a" ] || ln -s busybox "$BB_ROOT/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$BB_ROOT/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$BB_ROOT/etc/group"
fi

# Debian's iptables reaches /usr/sbin/iptables* through update-alternatives in its postinst,
# which rootfs-tools does not run: make the links, with the backend the host uses.
XT=$(readlink -f /usr/sbin/iptables 2>/dev/null); XT=${XT##*/}; [ -n "$XT" ] || XT=xtables-nft-multi
XT_LINKS=$OUT/iptables-links
rm -rf "$XT_LINKS"; mkdir -p "$XT_LINKS/usr/sbin"
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  ln -s "$XT" "$XT_LINKS/usr/sbin/$t"
done
BUSYBOX_REF=docker.io/library/busybox:1.36
all_refs="$images $BUSYBOX_REF"
for ref in $all_refs; do
  name=$(echo "$ref" | tr '/:' '__')
  a=$(args_for "$ref")
  done_mark=$OUT/$name.$(echo "$a" | sha256sum | cut -c1-12).done
  if [ ! -f "$done_mark" ]; then
    log "building $ref"
    rm -rf "${OUT:?}/$name" "$OUT/$name".*.done
    # shellcheck disable=SC2086 # word splitting of the argument list is intended
    "$RT" build $a --env "$PATH_ENV" -o "$OUT/$name" --tag "${ref##*:}" > "$OUT/$name.digest"
    touch "$done_mark"
  fi
done

# The registry: loopback only, its own data dir, no auth.
REG_DIR=$CACHE/e2e-registry
img_registry_config "$REG_DIR/config.yml" "$REG" "$REG_DIR/data"
if ! curl -fsS "http://$REG/v2/" >/dev/null 2>&1; then
  stop_registry
  docker-registry serve "$REG_DIR/config.yml" >"$E2E_DIR/registry.log" 2>&1 &
  echo $! > "$E2E_DIR/registry.pid"
  for _ in $(seq 50); do curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://$REG/v2/" >/dev/null || { log "registry did not start: $E2E_DIR/registry.log"; exit 1; }
fi

# Push under the upstream path: registry.k8s.io/kube-apiserver:V -> $REG/kube-apiserver:V,
# ghcr.io/siderolabs/kubelet:V -> $REG/siderolabs/kubelet:V (mirrors keep the repository).
for ref in $all_refs; do
  name=$(echo "$ref" | tr '/:' '__')
  [ -f "$OUT/$name.digest" ] || continue
  repo=${ref%:*}
  img_push "$OUT/$name" "${ref##*:}" "$REG" "${repo#*/}"
done

CONF=$E2E_DIR/config
mkdir -p "$CONF"
{
  echo "# Written by scripts/e2e-images.sh: every public registry the plans use -> loopback."
  for host in registry.k8s.io ghcr.io docker.io quay.io gcr.io; do
    printf '\n[[registry]]\nhost = "%s"\nmirrors = ["%s"]\nfallback = false\n' "$host" "$REG"
  done
  printf '\n[[registry]]\nhost = "%s"\ninsecure = true\n' "$REG"
} > "$CONF/registries.toml.tmp"
mv "$CONF/registries.toml.tmp" "$CONF/registries.toml"
log "ready: registry http://$REG, config $CONF/registries.toml, images in $OUT"
