#!/usr/bin/env bash
# Unpack benchmark: kboot vs `umoci unpack` vs plain `tar -x` of the same
# uncompressed layer, on a >= 200 MB, >= 10,000-file image built by rootfs-tools
# from this host's /usr/share/locale and /usr/share/man; then the rootfs cache
# (cold ensure, warm container start with overlay and with a copy).
# Needs root (owners, overlay mounts), hyperfine, umoci, GNU time.
# Usage: sudo bench/unpack.sh [RUNS]   (default 5)
set -euo pipefail
RUNS=${1:-5}
cd "$(dirname "$0")/.."
W=$(mktemp -d /var/tmp/kboot-bench-unpack.XXXXXX)
# Unpack targets live on a tmpfs: on this VM's ext4, creating inodes right after a
# mass delete is dominated by ext4's inode allocator (`recently_deleted`), 10-20x
# slower for every tool and growing run after run; tmpfs measures the tools.
mkdir "$W/mnt"
mount -t tmpfs -o size=8g tmpfs "$W/mnt"
trap 'umount -l "$W/mnt"; rm -rf "$W"' EXIT
O=$W/mnt

cargo build --release -q -p kboot --bin kboot --example unpack_cache
cargo build --release -q -p rootfs-tools
KBOOT=${CARGO_TARGET_DIR:-$PWD/target}/release/kboot
RT=${CARGO_TARGET_DIR:-$PWD/target}/release/rootfs-tools
CACHE=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/unpack_cache

echo "== building the image"
$RT build --add /usr/share/locale:/usr/share/locale --add /usr/share/man:/usr/share/man \
  --compression none -o "$W/oci" --tag bench >/dev/null
BLOB=$(ls -S "$W"/oci/blobs/sha256/* | head -1)
FILES=$(tar -tf "$BLOB" | wc -l)
MB=$(( $(stat -c %s "$BLOB") / 1000000 ))
echo "image: one uncompressed layer, $MB MB, $FILES entries"

export KBOOT_ROOT=$W/root KBOOT_STATE=$W/state KBOOT_CONFIG=$W/config
$KBOOT load -i "$W/oci" >/dev/null
REF=$($KBOOT images --format json | sed -n 's/.*"reference": *"\([^"]*\)".*/\1/p' | head -1)

echo "== unpack, $RUNS runs each after one warmup (blob in page cache)"
hyperfine --warmup 1 --runs "$RUNS" --export-json "$W/h.json" \
  --prepare "rm -rf $O/out" -n kboot "$KBOOT unpack $REF $O/out" \
  --prepare "rm -rf $O/bundle" -n umoci "umoci unpack --image $W/oci:bench $O/bundle" \
  --prepare "rm -rf $O/tar && mkdir $O/tar" -n tar "tar -xf $BLOB -C $O/tar" >/dev/null
python3 - "$W/h.json" <<'EOF'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
res = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
for n, x in res.items():
    print(f"{n:6} median {x['median']:.3f} s  user {x['user']:.3f} s  system {x['system']:.3f} s")
print(f"ratios: kboot/umoci {r['kboot']/r['umoci']:.2f}  kboot/tar {r['kboot']/r['tar']:.2f}")
EOF

echo "== peak RSS (one run each)"
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | sed -n 's/.*Maximum resident set size (kbytes): //p'; }
rm -rf "$O"/*; mkdir "$O/tar"
echo "kboot $(rss $KBOOT unpack "$REF" "$O/out") KB  umoci $(rss umoci unpack --image "$W/oci:bench" "$O/bundle") KB  tar $(rss tar -xf "$BLOB" -C "$O/tar") KB"
rm -rf "$O"/*

echo "== rootfs cache (kboot root on disk)"
$CACHE "$W/root" "$REF" 11
