# Helpers the image scripts share (sourced by e2e-images.sh, critest-images.sh and
# conformance-images.sh): staging trees from Debian packages and host files, a loopback
# docker-registry, pushing OCI layouts built by rootfs-tools.
# shellcheck shell=bash

# img_with_libs ROOT BIN...: copies the shared libraries of the binaries (ldd) into ROOT at their paths.
img_with_libs() {
  local root=$1; shift
  ldd "$@" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$root/$(dirname "$lib")"
    cp -L "$lib" "$root/$lib"
  done
}

# img_debs DIR PKG...: `apt-get download` each package into DIR unless a .deb of it is there.
img_debs() {
  local dir=$1 pkg; shift
  mkdir -p "$dir"
  for pkg in "$@"; do
    ls "$dir/${pkg}"_*.deb >/dev/null 2>&1 && continue
    # `apt-get download` needs the package lists; fetch them once if it fails without.
    (cd "$dir" && { apt-get download "$pkg" >/dev/null 2>&1 || { apt-get update -qq && apt-get download "$pkg" >/dev/null; }; })
  done
}

# img_nginx_stage DIR DEBS: Debian's nginx binary with its libraries in DIR (a tree for
# `--add DIR:/`), an index page in /usr/share/nginx/html. Run it with `nginx -g 'daemon off;'`
# and a configuration from img_nginx_conf.
img_nginx_stage() {
  local ng=$1 debs=$2
  img_debs "$debs" nginx
  mkdir -p "$ng/usr/sbin" "$ng/etc/nginx" "$ng/var/log/nginx" "$ng/var/lib/nginx" "$ng/usr/share/nginx/html"
  dpkg-deb --fsys-tarfile "$debs"/nginx_*.deb | tar -x -O ./usr/sbin/nginx > "$ng/usr/sbin/nginx"
  chmod 755 "$ng/usr/sbin/nginx"
  img_with_libs "$ng" "$ng/usr/sbin/nginx"
  echo '<html><body>Welcome to nginx!</body></html>' > "$ng/usr/share/nginx/html/index.html"
}

# img_nginx_conf FILE PORT: serves /usr/share/nginx/html on PORT, pid in /var/run/nginx.pid
# (`nginx: master process` is then its title), as user nobody.
img_nginx_conf() {
  cat > "$1" <<CONF
user nobody nogroup;
worker_processes 1;
pid /var/run/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
  access_log off;
  server { listen $2; root /usr/share/nginx/html; }
}
CONF
}

# img_nnp DIR: DIR/nnp, a static program printing "Effective uid: N" (upstream's nonewprivs
# test program); the image makes it setuid root.
img_nnp() {
  mkdir -p "$1"
  printf '%s\n' '#include <stdio.h>' '#include <unistd.h>' \
    'int main(void) { printf("Effective uid: %d\n", geteuid()); return 0; }' > "$1/nnp.c"
  gcc -static -O2 -o "$1/nnp" "$1/nnp.c"
}

# img_registry_config FILE ADDR DATA_DIR: a docker-registry config: ADDR only, no auth.
img_registry_config() {
  mkdir -p "$(dirname "$1")" "$3"
  cat > "$1" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $3}, delete: {enabled: true}, cache: {blobdescriptor: inmemory}}
http: {addr: $2, secret: kboot-e2e-local}
EOF
}

# img_push LAYOUT TAG REGISTRY PATH [COMMAND PREFIX...]: pushes the OCI layout's TAG to
# REGISTRY/PATH:TAG unless the registry already has that manifest digest (LAYOUT.digest, as
# rootfs-tools printed it, when present). The prefix (e.g. nsenter --net=…) runs curl and skopeo.
img_push() {
  local layout=$1 tag=$2 reg=$3 path=$4 want="" have=""; shift 4
  [ -f "$layout.digest" ] && want=$(cat "$layout.digest")
  if [ -n "$want" ]; then
    have=$("$@" curl -fsS -o /dev/null -w '%header{docker-content-digest}' -I \
             -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$reg/v2/$path/manifests/$tag" 2>/dev/null || true)
    [ "$have" = "$want" ] && return 0
  fi
  echo "pushing $layout:$tag -> $reg/$path:$tag" >&2
  "$@" skopeo copy -q --dest-tls-verify=false "oci:$layout:$tag" "docker://$reg/$path:$tag"
}
