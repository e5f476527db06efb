#!/usr/bin/env bash
# Builds the Kubernetes node components, etcd, crictl and critest from the Go module proxy
# (no source-hosting downloads), into a cache that is reused until the version changes.
#
#   scripts/build-k8s.sh [--only cri-tools|etcd|coredns|flannel|k8s|e2e|e2e-suite|sample-apiserver] [K8S_VERSION]
#                                                      # default version: the one kboot pins
#   --only e2e: what the whole conformance suite needs (e2e-suite and sample-apiserver);
#   --only e2e-suite: e2e.test, agnhost and ginkgo, all that the [NodeConformance] subset CI runs
#   needs (the sample API server, 9 min cold on its own dependencies, serves one
#   [sig-api-machinery] test only).
#
# Output: $KBOOT_BUILD_CACHE/k8s-<v>/bin/{kubelet,kube-apiserver,kube-controller-manager,kube-scheduler,
#         kube-proxy,kubectl}, $KBOOT_BUILD_CACHE/etcd-<v>/bin/{etcd,etcdctl},
#         $KBOOT_BUILD_CACHE/cri-tools-<v>/bin/{crictl,critest}, $KBOOT_BUILD_CACHE/coredns-<v>/bin/coredns,
#         $KBOOT_BUILD_CACHE/flannel-<v>/bin/{flanneld,flannel} (flannel: the CNI plugin)
set -euo pipefail

ONLY=all
if [ "${1:-}" = "--only" ]; then ONLY=$2; shift 2; fi
K8S_VERSION=${1:-${K8S_VERSION:-v1.34.4}}
ETCD_VERSION=${ETCD_VERSION:-v3.6.4}
CRI_TOOLS_VERSION=${CRI_TOOLS_VERSION:-v1.34.0}
# kubeadm's CoreDNS for v1.34 (src/roles/dns.rs pins the image tag).
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}
# src/roles/version.rs DEFAULT_FLANNEL_VERSION.
FLANNEL_VERSION=${FLANNEL_VERSION:-v0.26.7}
# The flannel CNI plugin: github.com/flannel-io/cni-plugin is not served by the Go module proxy
# here (403 for every version), so it comes from where it lived before it moved out,
# containernetworking/plugins' plugins/meta/flannel (last in v0.9.1; same config, same
# /run/flannel/subnet.env contract, delegates to bridge + host-local).
# The sample-apiserver image tag e2e.test --list-images names (1.29.2) ↔ this module version.
SAMPLE_APISERVER_VERSION=${SAMPLE_APISERVER_VERSION:-v0.29.2}
FLANNEL_CNI_SOURCE=${FLANNEL_CNI_SOURCE:-github.com/containernetworking/plugins/plugins/meta/flannel@v0.9.1}
CACHE=${KBOOT_BUILD_CACHE:-/var/cache/kboot-build}
JOBS=${KBOOT_BUILD_JOBS:-2}
export GOFLAGS="-buildvcs=false" CGO_ENABLED=0

command -v go >/dev/null || { echo "build-k8s: go not found; install Go >= 1.24" >&2; exit 1; }

build_cri_tools() {
  local dir="$CACHE/cri-tools-$CRI_TOOLS_VERSION"
  [ -x "$dir/bin/critest" ] && [ -x "$dir/bin/crictl" ] && return 0
  mkdir -p "$dir/src" "$dir/bin" && cd "$dir/src"
  if [ ! -f go.mod ]; then
    go mod init kboot.local/critools >/dev/null 2>&1
    go get "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION"
  fi
  GOFLAGS="$GOFLAGS -mod=mod" go build -p "$JOBS" -trimpath -o "$dir/bin/crictl" sigs.k8s.io/cri-tools/cmd/crictl
  # critest is a ginkgo test binary (cmd/critest holds only cri_test.go): only `go test -c` builds it.
  GOFLAGS="$GOFLAGS -mod=mod" go test -c -p "$JOBS" -trimpath -o "$dir/bin/critest" sigs.k8s.io/cri-tools/cmd/critest
}

build_etcd() {
  local dir="$CACHE/etcd-$ETCD_VERSION"
  [ -x "$dir/bin/etcd" ] && [ -x "$dir/bin/etcdctl" ] && return 0
  mkdir -p "$dir/src" "$dir/bin" && cd "$dir/src"
  if [ ! -f go.mod ]; then
    go mod init kboot.local/etcdbuild >/dev/null 2>&1
    # etcd's own main only calls etcdmain.Main, and its go.mod has relative replaces that
    # `go install` refuses, so build the same main from here.
    printf '%s\n' 'package main' '' 'import (' '	"os"' '' '	"go.etcd.io/etcd/server/v3/etcdmain"' ')' '' \
      'func main() { etcdmain.Main(os.Args) }' > main.go
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go get -tool "go.etcd.io/etcd/etcdctl/v3@$ETCD_VERSION"
    go mod tidy
  fi
  go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" .
  go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$dir/bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
}

# CoreDNS's go.mod has no replace directives: `go install module@version` builds it as released.
build_coredns() {
  local dir="$CACHE/coredns-$COREDNS_VERSION"
  [ -x "$dir/bin/coredns" ] && return 0
  mkdir -p "$dir/bin"
  GOBIN="$dir/bin" go install -p "$JOBS" -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
}

# flanneld's udp backend is C (pkg/backend/udp/proxy_amd64.c): without cgo the package does not
# compile. Built as upstream's Makefile does: cgo on, linked statically (glibc's libc.a; the
# proxy only makes syscalls), so the image needs no libc of its own for flanneld.
build_flannel() {
  local dir="$CACHE/flannel-$FLANNEL_VERSION"
  [ -x "$dir/bin/flanneld" ] && [ -x "$dir/bin/flannel" ] && return 0
  command -v gcc >/dev/null || { echo "build-k8s: flanneld needs gcc (cgo, udp backend): scripts/install-deps.sh" >&2; exit 1; }
  mkdir -p "$dir/bin" "$dir/gobin-d" "$dir/gobin-c"
  # netgo, osusergo: Go's own resolver and user lookup, not glibc's NSS (absent from a static binary).
  GOBIN="$dir/gobin-d" CGO_ENABLED=1 go install -p "$JOBS" -trimpath -tags netgo,osusergo \
    -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION -extldflags -static" \
    "github.com/flannel-io/flannel@$FLANNEL_VERSION"
  mv "$dir/gobin-d/flannel" "$dir/bin/flanneld"
  GOBIN="$dir/gobin-c" go install -p "$JOBS" -trimpath -ldflags "-s -w" "$FLANNEL_CNI_SOURCE"
  mv "$dir/gobin-c/flannel" "$dir/bin/flannel"
  rmdir "$dir/gobin-d" "$dir/gobin-c"
}

# Why a wrapper module: k8s.io/kubernetes requires its staging modules at v0.0.0 with replace
# directives, so `go install k8s.io/kubernetes/cmd/kubelet@v1.x` cannot work. A separate module
# that requires k8s.io/kubernetes and replaces each staging module with its v0.X.Y tag can.
# k8s_module: cd into $CACHE/k8s-<v>/src, creating that module unless it exists.
k8s_module() {
  local v=${K8S_VERSION#v} gomod g c
  mkdir -p "$CACHE/k8s-$K8S_VERSION/src" "$CACHE/k8s-$K8S_VERSION/bin" && cd "$CACHE/k8s-$K8S_VERSION/src"
  [ -f go.mod ] && return 0
  go mod init kboot.local/k8sbuild >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # Derive the staging list from upstream's go.mod: a missing replace fails, an extra one is harmless.
  # Only exact v0.0.0 requires are staging: k8s.io/utils and kube-openapi use v0.0.0-<date>-<hash> pseudo-versions.
  for m in $( { sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*|\1|p' "$gomod"
                sed -n 's|^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) v0\.0\.0[[:space:]]*$|\1|p' "$gomod"; } | sort -u ); do
    go mod edit -replace="$m=$m@v0.${v#1.}"
  done
  # Upstream's godebug line is ignored for dependencies; copy it so TLS/x509 behave as in a release.
  g=$(sed -n 's/^godebug //p' "$gomod"); if [ -n "$g" ]; then go mod edit -godebug="$g"; fi
  for c in kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl; do
    go get -tool "k8s.io/kubernetes/cmd/$c@$K8S_VERSION"
  done
  go mod tidy
}

# Upstream's tags for release builds, test binaries included (hack/lib/golang.sh); the same tags
# for e2e.test and agnhost also let them reuse the components' compiled packages.
K8S_TAGS=selinux,notest,grpcnotrace

# The -X flags that give the binaries their version (hack/lib/version.sh).
k8s_ldflags() {
  local v=${K8S_VERSION#v} minor p ld="-s -w"
  minor=${v#1.}; minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X '$p.gitVersion=$K8S_VERSION' -X '$p.gitMajor=1' -X '$p.gitMinor=$minor' -X '$p.gitTreeState=clean' -X '$p.buildDate=2025-01-01T00:00:00Z'"
  done
  echo "$ld"
}

build_k8s() {
  local dir="$CACHE/k8s-$K8S_VERSION"
  local bins=(kubelet kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl)
  local b missing=0
  for b in "${bins[@]}"; do [ -x "$dir/bin/$b" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  k8s_module
  go build -p "$JOBS" -trimpath -tags "$K8S_TAGS" -ldflags "$(k8s_ldflags)" -o "$dir/bin/" \
    $(printf 'k8s.io/kubernetes/cmd/%s ' "${bins[@]}")
}

# The conformance suite (scripts/conformance.sh, docs/conformance.md): e2e.test and agnhost from
# the wrapper module above, the ginkgo CLI at the version k8s' go.mod pins (parallel runs), and
# the sample API server the aggregator test runs, in a module of its own (its go.mod has
# replace directives, ignored for a dependency; its requires are real versions).
build_e2e_suite() {
  local dir="$CACHE/k8s-$K8S_VERSION" kdir ginkgo_v agnhost_v
  if [ ! -x "$dir/bin/e2e.test" ] || [ ! -x "$dir/bin/agnhost" ] || [ ! -x "$dir/bin/ginkgo" ]; then
    k8s_module
    kdir=$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)
    # -mod=mod: test/e2e's imports (ginkgo, gomega, the e2e framework's) are added to the
    # wrapper's go.mod at the versions k8s requires.
    [ -x "$dir/bin/e2e.test" ] || GOFLAGS="$GOFLAGS -mod=mod" go test -c -p "$JOBS" -trimpath \
      -tags "$K8S_TAGS" -ldflags "$(k8s_ldflags)" -o "$dir/bin/e2e.test" k8s.io/kubernetes/test/e2e
    agnhost_v=$(cat "$kdir/test/images/agnhost/VERSION")
    [ -x "$dir/bin/agnhost" ] || GOFLAGS="$GOFLAGS -mod=mod" go build -p "$JOBS" -trimpath -tags "$K8S_TAGS" \
      -ldflags "-s -w -X main.Version=$agnhost_v" -o "$dir/bin/agnhost" k8s.io/kubernetes/test/images/agnhost
    echo "$agnhost_v" > "$dir/bin/agnhost.version"
    ginkgo_v=$(go list -m -f '{{.Version}}' github.com/onsi/ginkgo/v2)
    [ -x "$dir/bin/ginkgo" ] || GOBIN="$dir/bin" go install -p "$JOBS" -trimpath -ldflags "-s -w" \
      "github.com/onsi/ginkgo/v2/ginkgo@$ginkgo_v"
  fi
}

build_sample_apiserver() {
  local sdir="$CACHE/sample-apiserver-$SAMPLE_APISERVER_VERSION"
  [ -x "$sdir/bin/sample-apiserver" ] && return 0
  mkdir -p "$sdir/src" "$sdir/bin" && cd "$sdir/src"
  if [ ! -f go.mod ]; then
    go mod init kboot.local/sampleapiserver >/dev/null 2>&1
    go get "k8s.io/sample-apiserver@$SAMPLE_APISERVER_VERSION"
  fi
  GOFLAGS="$GOFLAGS -mod=mod" go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "$sdir/bin/sample-apiserver" k8s.io/sample-apiserver
}

# cri-tools first (small; the CRI tests need it), then etcd, then the long Kubernetes build.
case "$ONLY" in
  all) build_cri_tools; build_etcd; build_coredns; build_flannel; build_k8s ;;
  cri-tools) build_cri_tools ;;
  etcd) build_etcd ;;
  coredns) build_coredns ;;
  flannel) build_flannel ;;
  k8s) build_k8s ;;
  e2e) build_e2e_suite; build_sample_apiserver ;;
  e2e-suite) build_e2e_suite ;;
  sample-apiserver) build_sample_apiserver ;;
  *) echo "build-k8s: --only takes cri-tools, etcd, coredns, flannel, k8s, e2e, e2e-suite or sample-apiserver" >&2; exit 2 ;;
esac
echo "build-k8s: done ($ONLY) in $CACHE"
