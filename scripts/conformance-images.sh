#!/usr/bin/env bash
# Assembles the images Kubernetes' conformance tests run, with rootfs-tools from the Go builds
# of scripts/build-k8s.sh (--only e2e) and Debian packages, under the names
# `e2e.test --list-images` prints with KUBE_TEST_REPO_LIST pointing at the loopback registry
# scripts/e2e-images.sh serves (127.0.0.1:5055), and pushes them there. vendor-images.md says
# how each differs from upstream's; a site with internet pulls upstream's instead.
#
#   scripts/conformance-images.sh        # needs the registry up (scripts/e2e-images.sh)
#   CONFORMANCE_IMAGES=node scripts/conformance-images.sh   # only what the [NodeConformance] subset pulls
#
# CONFORMANCE_IMAGES: `all` (default: every image a [Conformance] test uses) or `node` (the
# images the 140 [NodeConformance] specs CI runs pull, NODE_IMAGES below: no sample API server,
# so that build is skipped too).
# Output: $E2E_DIR/repo-list.yaml (the KUBE_TEST_REPO_LIST file), $E2E_DIR/images.txt (every
# image e2e.test lists, and whether it was built). Layouts: $KBOOT_BUILD_CACHE/conformance-images/<key>,
# <key> hashing this script, lib/images.sh and the input binaries.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(dirname "$HERE")
. "$HERE/lib/images.sh"
export PATH=$PATH:/usr/local/go/bin
K8S_VERSION=${K8S_VERSION:-v1.34.4}
SAMPLE_APISERVER_VERSION=${SAMPLE_APISERVER_VERSION:-v0.29.2}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.1}
CACHE=${KBOOT_BUILD_CACHE:-/var/cache/kboot-build}
E2E_DIR=${E2E_DIR:-/var/tmp/kboot-e2e}
REG=127.0.0.1:${E2E_REGISTRY_PORT:-5055}
BIN=$CACHE/k8s-$K8S_VERSION/bin
SAMPLE_BIN=$CACHE/sample-apiserver-$SAMPLE_APISERVER_VERSION/bin/sample-apiserver
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/bin/coredns
RT=${CARGO_TARGET_DIR:-$REPO/target}/debug/rootfs-tools
log() { echo "conformance-images: $*" >&2; }

# The images the [NodeConformance] specs pull: the registry's log (manifest GETs by kboot) over
# two runs of that subset, which agrees with reading test/e2e/common (pause is the sandbox's).
# httpd, nginx, nonroot, kitten, nautilus, jessie-dnsutils and sample-apiserver serve specs
# outside the subset only.
NODE_IMAGES="agnhost busybox nonewprivs pause"
case ${CONFORMANCE_IMAGES:=all} in
  all) WANT=all; need=e2e ;;
  node) WANT=" $NODE_IMAGES "; need=e2e-suite ;;
  *) log "CONFORMANCE_IMAGES is 'all' or 'node', not '$CONFORMANCE_IMAGES'"; exit 2 ;;
esac
# want REPO: whether this run builds that image (the last element of its repository).
want() { [ "$WANT" = all ] || case $WANT in *" $1 "*) true;; *) false;; esac; }
[ -x "$BIN/e2e.test" ] && [ -x "$BIN/agnhost" ] && { ! want sample-apiserver || [ -x "$SAMPLE_BIN" ]; } \
  || "$HERE/build-k8s.sh" --only "$need" "$K8S_VERSION"
curl -fsS "http://$REG/v2/" >/dev/null || { log "no registry on $REG: run scripts/e2e-images.sh first"; exit 1; }
[ -x "$RT" ] || (cd "$REPO" && cargo build -q -p rootfs-tools)
# Files from the k8s.io/kubernetes module (already in the module cache from the build).
KMOD=$(cd "$CACHE/k8s-$K8S_VERSION/src" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)

# Every registry the suite names, moved to the loopback one; the invalid, private and
# authenticated registries stay as they are (tests expect pulls from them to fail).
mkdir -p "$E2E_DIR"
cat > "$E2E_DIR/repo-list.yaml" <<EOF
promoterE2eRegistry: $REG/e2e-test-images
gcRegistry: $REG
gcEtcdRegistry: $REG
dockerLibraryRegistry: $REG/library
sigStorageRegistry: $REG/sig-storage
buildImageRegistry: $REG/build-image
cloudProviderGcpRegistry: $REG/cloud-provider-gcp
EOF
listed=$(KUBE_TEST_REPO_LIST=$E2E_DIR/repo-list.yaml "$BIN/e2e.test" --list-images 2>/dev/null | sort -u)
[ -n "$listed" ] || { log "e2e.test --list-images printed nothing"; exit 1; }

# The busybox of every busybox-based image. Upstream's e2e busybox is docker's busybox 1.37.0,
# whose ash passes every environment variable on to its children (`data-1`, which the
# ConfigMap/Secret environment tests look for in `sh -c env`) and says
# `/bin/sh: can't create /file: Read-only file system` (the read-only root test). Debian's busybox
# packages revert that import (their ash drops names that are not shell identifiers), except
# their installer flavour, which sets FEATURE_DI_ENV_HACK. So this is Debian's busybox 1.37.0
# source (suite BUSYBOX_SUITE, from the host's own Debian archive), its patches and its
# busybox-static configuration plus that one option, built static and checked for both
# behaviours. That configuration also makes ash run its own applets before anything on PATH
# (FEATURE_SH_STANDALONE, FEATURE_PREFER_APPLETS: a rescue shell's choice), so `sh -c 'nc -u …'`
# in agnhost ran busybox's nc, which has no -u, instead of netcat-openbsd (the node-pod udp spec
# failed so); upstream's busybox and alpine's (agnhost's) leave both off, and so does this one.
# Cached in $CACHE/busybox-1.37.0-r2 (r2: the recipe's second version).
BUSYBOX_VERSION=1.37.0 BUSYBOX_SUITE=${BUSYBOX_SUITE:-trixie}
BB=$CACHE/busybox-$BUSYBOX_VERSION-r2/busybox
bb_build() {
  [ -x "$BB" ] && return 0
  local w src=/etc/apt/sources.list.d/debian.sources uri key p
  uri=$(awk '/^URIs:/ {print $2; exit}' "$src" 2>/dev/null)
  key=$(awk '/^Signed-By:/ {print $2; exit}' "$src" 2>/dev/null)
  [ -n "$uri" ] || { log "busybox: no Debian archive URI in $src (the host's apt sources)"; return 1; }
  log "building busybox $BUSYBOX_VERSION from Debian's $BUSYBOX_SUITE source (FEATURE_DI_ENV_HACK)"
  w=$(mktemp -d "$CACHE/busybox-build.XXXXXX")
  mkdir -p "$w/lists/partial"
  echo "deb-src ${key:+[signed-by=$key] }$uri $BUSYBOX_SUITE main" > "$w/sources.list"
  local A=(-o "Dir::Etc::SourceList=$w/sources.list" -o Dir::Etc::SourceParts=- -o "Dir::State::Lists=$w/lists")
  apt-get "${A[@]}" update -qq && (cd "$w" && apt-get "${A[@]}" source --download-only -qq busybox >/dev/null 2>&1) \
    || { log "busybox: apt-get source busybox ($BUSYBOX_SUITE) failed"; return 1; }
  [ -f "$w/busybox_$BUSYBOX_VERSION.orig.tar.bz2" ] || { log "busybox: $BUSYBOX_SUITE's source is not $BUSYBOX_VERSION ($(ls "$w"))"; return 1; }
  tar -xjf "$w/busybox_$BUSYBOX_VERSION.orig.tar.bz2" -C "$w" && tar -xJf "$w"/busybox_"$BUSYBOX_VERSION"-*.debian.tar.xz -C "$w"
  local d=$w/busybox-$BUSYBOX_VERSION
  for p in $(grep -v '^#' "$w/debian/patches/series"); do patch -d "$d" -p1 -s < "$w/debian/patches/$p"; done
  sed -e 's/^# CONFIG_FEATURE_DI_ENV_HACK is not set$/CONFIG_FEATURE_DI_ENV_HACK=y/' \
    -e 's/^CONFIG_FEATURE_SH_STANDALONE=y$/# CONFIG_FEATURE_SH_STANDALONE is not set/' \
    -e 's/^CONFIG_FEATURE_PREFER_APPLETS=y$/# CONFIG_FEATURE_PREFER_APPLETS is not set/' \
    "$w/debian/config/pkg/static" > "$d/.config"
  # `yes` answers any option the edits above leave undecided (with the default); it ends on
  # SIGPIPE when make exits, which pipefail would count as a failure.
  { { yes "" || true; } | make -C "$d" silentoldconfig && make -C "$d" -j"$(nproc)" busybox; } > "$w/build.log" 2>&1 \
    || { log "busybox: build failed ($w/build.log)"; return 1; }
  # The behaviours the tests depend on, before the binary is kept.
  env -i 'data-1=value-1' "$d/busybox" sh -c env | grep -qx 'data-1=value-1' \
    || { log "busybox: sh drops data-1 from the environment"; return 1; }
  # (The write fails, so the command's status is not 0: `|| true` keeps set -e from ending here.)
  local ro; ro=$(unshare -m sh -c "mount -t tmpfs -o ro tmpfs '$w/lists' && cd / && '$d/busybox' sh -c 'echo test > $w/lists/file'" 2>&1) || true
  [ "$ro" = "sh: can't create $w/lists/file: Read-only file system" ] || { log "busybox: unexpected read-only message: $ro"; return 1; }
  # A command is looked up on PATH (an image's netcat-openbsd `nc`), not taken from the applets.
  mkdir -p "$w/path" && printf '#!/bin/sh\necho from-path\n' > "$w/path/nc" && chmod 755 "$w/path/nc"
  [ "$(env -i PATH="$w/path" "$d/busybox" sh -c 'nc')" = from-path ] \
    || { log "busybox: sh runs its nc applet before the nc on PATH (FEATURE_SH_STANDALONE/PREFER_APPLETS)"; return 1; }
  mkdir -p "$(dirname "$BB")" && cp "$d/busybox" "$BB.tmp" && mv "$BB.tmp" "$BB"
  rm -rf "$w"
}
bb_build

# The sample API server is an input only when that image is built (a node-only run has none).
inputs=("$BIN/agnhost" "$BB"); ! want sample-apiserver || inputs+=("$SAMPLE_BIN")
key=$( { cat "$0" "$HERE/lib/images.sh"; stat -c '%n %s %Y' "${inputs[@]}"; } | sha256sum | cut -c1-16)
OUT=$CACHE/conformance-images/$key
S=$OUT/stage DEBS=$CACHE/conformance-debs
mkdir -p "$OUT"

# --- stages -----------------------------------------------------------------------------------
# bb_tree DIR [APPLET...]: the busybox above with its applet links in /bin (sh among them),
# except the applets named (a Debian package provides them in the image), and Debian's bash
# (upstream's agnhost and jessie-dnsutils have one).
bb_tree() {
  local dir=$1 a; shift
  mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/var/run"
  chmod 1777 "$dir/tmp"
  cp "$BB" "$dir/bin/busybox"
  for a in $("$BB" --list); do
    case " $* " in *" $a "*) continue;; esac
    [ -e "$dir/bin/$a" ] || ln -s busybox "$dir/bin/$a"
  done
  # Debian's bash (the host's, from the same release) with its libraries.
  cp /bin/bash "$dir/bin/bash" && img_with_libs "$dir" /bin/bash
  printf '%s\n' root:x:0:0:root:/root:/bin/sh daemon:x:1:1:daemon:/usr/sbin:/bin/false \
    www-data:x:33:33:www-data:/var/www:/bin/false nobody:x:65534:65534:nobody:/home:/bin/false > "$dir/etc/passwd"
  printf '%s\n' root:x:0: daemon:x:1: www-data:x:33: nogroup:x:65534: nobody:x:65534: > "$dir/etc/group"
}

# build_stages: the trees the wanted images are made of (S/.done-<repo> marks each).
build_stages() {
  mkdir -p "$S"
  if [ ! -f "$S/.done-busybox" ]; then
    rm -rf "$S/busybox" && bb_tree "$S/busybox" && touch "$S/.done-busybox"
  fi
  if { want agnhost || want nautilus || want kitten; } && [ ! -f "$S/.done-agnhost" ]; then
    stage_agnhost && touch "$S/.done-agnhost"
  fi
  if want httpd && [ ! -f "$S/.done-httpd" ]; then stage_httpd && touch "$S/.done-httpd"; fi
  if want nginx && [ ! -f "$S/.done-nginx" ]; then
    rm -rf "$S/nginx" && img_nginx_stage "$S/nginx" "$DEBS" && img_nginx_conf "$S/nginx/etc/nginx/nginx.conf" 80 \
      && touch "$S/.done-nginx"
  fi
  if want nonewprivs && [ ! -f "$S/.done-nnp" ]; then rm -rf "$S/nnp" && img_nnp "$S/nnp" && touch "$S/.done-nnp"; fi
  if want pause && [ ! -f "$S/.done-pause" ]; then stage_pause && touch "$S/.done-pause"; fi
}

stage_agnhost() {
  # agnhost: upstream's is alpine with bind-tools, curl, netcat-openbsd, iproute2, bash; the same
  # tools come from Debian (--apt in the image), so busybox must not shadow nc or ip.
  local a=$S/agnhost
  rm -rf "$a" && bb_tree "$a" nc netcat ip
  cp "$BIN/agnhost" "$a/agnhost" && ln -s agnhost "$a/agnhost-2"
  cp "$KMOD/test/images/agnhost/porter/localhost.crt" "$KMOD/test/images/agnhost/porter/localhost.key" "$a/"
  chmod 644 "$a/localhost.crt" "$a/localhost.key"
  mkdir -p "$a/uploads" "$a/usr/bin"
  [ -x "$COREDNS_BIN" ] && cp "$COREDNS_BIN" "$a/coredns"
  # netcat-openbsd reaches `nc` through update-alternatives, which rootfs-tools does not run.
  ln -s /bin/nc.openbsd "$a/usr/bin/nc"; ln -s /bin/nc.openbsd "$a/usr/bin/netcat"
  printf '%s\n' user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh >> "$a/etc/passwd"
  printf '%s\n' user-defined-in-image:x:1000: group-defined-in-image:x:50000:user-defined-in-image >> "$a/etc/group"
  for pet in nautilus kitten; do
    mkdir -p "$S/$pet"
    cp "$KMOD/test/images/$pet/html/"* "$S/$pet/" 2>/dev/null || printf '{\n  "image": "%s.jpg"\n}\n' "$pet" > "$S/$pet/data.json"
  done
}

stage_httpd() {
  # httpd: busybox's httpd where upstream's alpine httpd keeps its documents, started by an
  # httpd-foreground script as upstream's CMD is.
  local h=$S/httpd
  rm -rf "$h" && mkdir -p "$h/usr/local/apache2/htdocs" "$h/usr/local/bin"
  echo '<html><body><h1>It works!</h1></body></html>' > "$h/usr/local/apache2/htdocs/index.html"
  printf '%s\n' '#!/bin/sh' 'echo "AH00558: httpd: could not determine the server FQDN (kboot test stand-in)" >&2' \
    'exec httpd -f -v -p 80 -h /usr/local/apache2/htdocs' > "$h/usr/local/bin/httpd-foreground"
  chmod 755 "$h/usr/local/bin/httpd-foreground"
}

stage_pause() {
  rm -rf "$S/pause" && mkdir -p "$S/pause"
  printf '%s\n' '#include <signal.h>' '#include <sys/wait.h>' '#include <unistd.h>' \
    'static void down(int s) { (void)s; _exit(0); }' \
    'static void reap(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }' \
    'int main(void) { signal(SIGINT, down); signal(SIGTERM, down); signal(SIGCHLD, reap); for (;;) pause(); }' \
    > "$S/pause/pause.c"
  gcc -static -O2 -o "$S/pause/pause" "$S/pause/pause.c"
}

PATH_ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EXCL=(--apt-exclude debconf --apt-exclude adduser --apt-exclude init-system-helpers)
# recipe REPO: the rootfs-tools arguments for an image repository (last path element), or
# nothing when there is no recipe (the image is not used by any [Conformance] test).
recipe() {
  local agn=(--add "$S/agnhost:/" --apt curl --apt netcat-openbsd --apt bind9-dnsutils --apt iproute2
             --apt libc-bin "${EXCL[@]}" --env "$PATH_ENV")
  case $1 in
    agnhost) R=("${agn[@]}" --entrypoint /agnhost --cmd pause) ;;
    nautilus|kitten) R=("${agn[@]}" --add "$S/$1:/" --entrypoint /agnhost --cmd test-webserver) ;;
    busybox) R=(--add "$S/busybox:/" --env "$PATH_ENV" --cmd sh) ;;
    httpd) R=(--add "$S/busybox:/" --add "$S/httpd:/" --env "$PATH_ENV" --cmd httpd-foreground) ;;
    nginx) R=(--add "$S/busybox:/" --add "$S/nginx:/" --env "$PATH_ENV" --cmd nginx --cmd=-g '--cmd=daemon off;') ;;
    # Upstream's is Debian jessie with dnsutils: dig, getent, a shell.
    jessie-dnsutils) R=(--add "$S/busybox:/" --apt bind9-dnsutils --apt libc-bin "${EXCL[@]}" --env "$PATH_ENV" --cmd sh) ;;
    nonewprivs) R=(--add "$S/busybox:/" --add "$S/nnp/nnp:/usr/local/bin/nnp:4755" --env "$PATH_ENV" --cmd nnp) ;;
    nonroot) R=(--add "$S/busybox:/" --env "$PATH_ENV" --user 1234 --cmd sh) ;;
    pause) R=(--add "$S/pause/pause:/pause:755" --user 65535:65535 --entrypoint /pause) ;;
    sample-apiserver) R=(--add "$SAMPLE_BIN:/sample-apiserver:755" --entrypoint /sample-apiserver) ;;
    *) R=() ;;
  esac
}

: > "$E2E_DIR/images.txt"
for ref in $listed; do
  case $ref in "$REG"/*) ;; *) echo "$ref not-local (a test expects this pull to fail, or it is not mapped)" >> "$E2E_DIR/images.txt"; continue;; esac
  path=${ref#"$REG"/}; repo=${path%:*}; tag=${ref##*:}
  if [ "$repo" = etcd ]; then
    # The plans' etcd (scripts/e2e-images.sh) under this name already: /usr/local/bin/etcd.
    echo "$ref from-e2e-images" >> "$E2E_DIR/images.txt"; continue
  fi
  recipe "${repo##*/}"
  if [ "${#R[@]}" = 0 ]; then echo "$ref not-built (no [Conformance] test uses it)" >> "$E2E_DIR/images.txt"; continue; fi
  if ! want "${repo##*/}"; then echo "$ref not-built (CONFORMANCE_IMAGES=$CONFORMANCE_IMAGES: not pulled by those specs)" >> "$E2E_DIR/images.txt"; continue; fi
  name=$(echo "$path" | tr '/:' '__')
  mark=$OUT/$name.$(printf '%s\n' "${R[@]}" | sha256sum | cut -c1-12).done
  if [ ! -f "$mark" ]; then
    build_stages
    log "building $ref"
    rm -rf "${OUT:?}/$name" "$OUT/$name".*.done
    "$RT" build "${R[@]}" -o "$OUT/$name" --tag "$tag" > "$OUT/$name.digest"
    touch "$mark"
  fi
  img_push "$OUT/$name" "$tag" "$REG" "$repo"
  echo "$ref built $(cat "$OUT/$name.digest")" >> "$E2E_DIR/images.txt"
done
log "ready: $(grep -c ' built ' "$E2E_DIR/images.txt") images built and pushed to $REG; list in $E2E_DIR/images.txt, KUBE_TEST_REPO_LIST=$E2E_DIR/repo-list.yaml"
