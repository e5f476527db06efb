#!/usr/bin/env bash
# Builds the images critest runs, with rootfs-tools from Debian packages and host files, and
# pushes them under their upstream names to the registry on 127.0.0.1:5000 inside the network
# namespace of process $1 (scripts/critest.sh's). Layouts are cached under $CACHE, keyed by this
# script's content: a second run only pushes.
#
#   ROOTFS_TOOLS=target/debug/rootfs-tools scripts/critest-images.sh NETNS_PID
#
# What the images hold, and why (critest v1.34 execs these in them):
# - busybox: Debian's dynamic busybox (its shell runs applets by exec, so a masked /bin/ls
#   gives "Permission denied"; busybox-static runs them in-process), applets as hardlinks (a
#   mask must not follow a symlink onto /bin/busybox), pgrep (procps) and ipcs (util-linux)
#   with their libraries; users and groups as upstream's test images.
# - nginx:1.14-2 / hostnet-nginx-amd64: Debian's nginx on that base, serving / on 80 / 12003,
#   pid in /var/run/nginx.pid, `nginx: master process` as its title.
# - httpd:2.4.39-4: busybox's httpd serving an index page from /www on 80.
# - nonewprivs:1.3: a setuid-root static program printing "Effective uid: N".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/images.sh
NS_PID=${1:?usage: critest-images.sh NETNS_PID}
ROOTFS_TOOLS=${ROOTFS_TOOLS:-${CARGO_TARGET_DIR:-$PWD/target}/debug/rootfs-tools}
KEY=$(cat "$0" scripts/lib/images.sh | sha256sum | cut -c1-16)
CACHE=${CACHE:-/var/cache/kboot-build/critest-images}/$KEY
DEBS=${DEBS:-/var/cache/kboot-build/critest-debs}
mkdir -p "$CACHE" "$DEBS"

in_ns() { nsenter --net=/proc/$NS_PID/ns/net -- "$@"; }

# --- stages (only when some layout is missing) ------------------------------------------------
stage=$CACHE/stage
build_stages() {
  rm -rf "$stage" && mkdir -p "$stage"
  img_debs "$DEBS" busybox
  local bb=$stage/busybox
  mkdir -p "$bb/bin" "$bb/usr/bin" "$bb/etc" "$bb/tmp" "$bb/var/run" "$bb/root"
  dpkg-deb --fsys-tarfile "$DEBS"/busybox_*.deb | tar -x -C "$stage" ./bin/busybox
  mv "$stage/bin/busybox" "$bb/bin/busybox" && rmdir "$stage/bin"
  for a in $("$bb/bin/busybox" --list); do
    [ "$a" = busybox ] || ln -f "$bb/bin/busybox" "$bb/bin/$a"
  done
  cp /usr/bin/pgrep /usr/bin/ipcs "$bb/usr/bin/"
  img_with_libs "$bb" "$bb/bin/busybox" /usr/bin/pgrep /usr/bin/ipcs
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\ndefault-user:x:1000:1000::/:/bin/sh\n' > "$bb/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n' > "$bb/etc/group"
  chmod 1777 "$bb/tmp"

  img_nginx_stage "$stage/nginx" "$DEBS"
  mkdir -p "$stage/www" && echo '<html><body>It works!</body></html>' > "$stage/www/index.html"
  for port in 80 12003; do img_nginx_conf "$stage/nginx-$port.conf" "$port"; done
  img_nnp "$stage/nnp"
}

# --- images -----------------------------------------------------------------------------------
image() { # NAME:TAG then rootfs-tools flags: build the layout unless cached, then push
  local name=$1; shift
  local layout=$CACHE/layouts/${name//[\/:]/_}
  if [ ! -f "$layout/index.json" ]; then
    [ -x "$stage/nnp/nnp" ] || build_stages
    "$ROOTFS_TOOLS" build "$@" -o "$layout" --tag "${name##*:}" >/dev/null
  fi
  in_ns skopeo copy --quiet --dest-tls-verify=false "oci:$layout:${name##*:}" "docker://127.0.0.1:5000/$name"
}
E=e2e-test-images R=k8s-staging-cri-tools
BB=(--add "$stage/busybox:/" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
NGINX=(--add "$stage/nginx:/" --cmd nginx --cmd=-g '--cmd=daemon off;')
image "$E/busybox:1.29-2" "${BB[@]}" --cmd top
# Upstream's httpd-foreground prints an AH00558 line naming httpd at start; critest's
# "Multiple Containers ... container log" waits for "httpd" in the log. busybox httpd is silent.
image "$E/httpd:2.4.39-4" "${BB[@]}" --add "$stage/www:/www" --entrypoint=sh --entrypoint=-c \
  --entrypoint='echo "AH00558: httpd: could not determine the server FQDN (kboot test stand-in)" >&2; exec httpd -f -p 80 -h /www'
image "$E/nginx:1.14-2" "${BB[@]}" "${NGINX[@]}" --add "$stage/nginx-80.conf:/etc/nginx/nginx.conf"
image "$R/hostnet-nginx-amd64:latest" "${BB[@]}" "${NGINX[@]}" --add "$stage/nginx-12003.conf:/etc/nginx/nginx.conf"
image "$E/nonewprivs:1.3" --add "$stage/nnp/nnp:/usr/local/bin/nnp:4755" --entrypoint /usr/local/bin/nnp
for t in 1 2 3; do image "$R/test-image-tags:$t" "${BB[@]}" --cmd top --label kboot.test/marker=tags; done
for i in 1 2 3; do image "$R/test-image-$i:latest" "${BB[@]}" --cmd top --label "kboot.test/marker=$i"; done
image "$R/test-image-latest:latest" "${BB[@]}" --cmd top --label kboot.test/marker=latest
image "$R/test-image-tag:test" "${BB[@]}" --cmd top --label kboot.test/marker=tag
image "$R/test-image-tag:all" "${BB[@]}" --cmd top --label kboot.test/marker=tag
image "$R/test-image-user-uid:latest" "${BB[@]}" --cmd top --user 1002
image "$R/test-image-user-username:latest" "${BB[@]}" --cmd top --user www-data
image "$R/test-image-user-uid-group:latest" "${BB[@]}" --cmd top --user 1003:1004
image "$R/test-image-user-username-group:latest" "${BB[@]}" --cmd top --user www-data:1004
image "$R/test-image-predefined-group:latest" "${BB[@]}" --cmd top --user 1000
