#!/usr/bin/env bash
# Pull benchmark: kboot pull vs `skopeo copy docker://… oci:DIR`, same loopback
# registry, same image (>= 300 MB, 6 layers), alternating runs, fresh
# destination each run. Reports median wall time, median peak RSS, ratios.
#   bench/pull.sh [RUNS]          (default 5; needs docker-registry, skopeo, umoci)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
LAYERS=6
LAYER_MB=${LAYER_MB:-52}

cargo build --release --quiet --bin kboot
KBOOT=${CARGO_TARGET_DIR:-$PWD/target}/release/kboot

WORK=$(mktemp -d /tmp/kboot-bench-pull.XXXXXX)
REG_PID=
cleanup() { [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT, secret: bench}
YML
/usr/bin/docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done

# Image: $LAYERS layers of incompressible data, built with umoci, pushed with skopeo.
umoci init --layout "$WORK/oci" >/dev/null
umoci new --image "$WORK/oci:big" >/dev/null
for i in $(seq "$LAYERS"); do
  rm -rf "$WORK/rootfs"; mkdir -p "$WORK/rootfs/data"
  head -c "$((LAYER_MB * 1024 * 1024))" /dev/urandom > "$WORK/rootfs/data/layer$i.bin"
  umoci insert --image "$WORK/oci:big" "$WORK/rootfs/data" "/data" >/dev/null
done
umoci config --image "$WORK/oci:big" --architecture amd64 --os linux >/dev/null
skopeo --insecure-policy copy --dest-tls-verify=false -q "oci:$WORK/oci:big" "docker://127.0.0.1:$PORT/bench/big:1"
SIZE=$(du -sb "$WORK/registry" | cut -f1)
echo "image: $LAYERS layers, $((SIZE / 1000000)) MB in the registry"

measure() { # name command… → appends "seconds kbytes" to $WORK/name.txt
  local name=$1; shift
  /usr/bin/time -f '%e %M' -o "$WORK/t" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/t" >> "$WORK/$name.txt"
}
for i in $(seq "$RUNS"); do
  rm -rf "$WORK/kb" "$WORK/sk"; sync
  measure kboot "$KBOOT" --root "$WORK/kb/root" --state "$WORK/kb/state" --config "$WORK/kb/config" \
    pull --quiet --insecure-registry "127.0.0.1:$PORT" "127.0.0.1:$PORT/bench/big:1"
  rm -rf "$WORK/kb" "$WORK/sk"; sync
  measure skopeo skopeo --insecure-policy copy -q --src-tls-verify=false \
    "docker://127.0.0.1:$PORT/bench/big:1" "oci:$WORK/sk:big"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
kt=$(cut -d' ' -f1 "$WORK/kboot.txt" | median); st=$(cut -d' ' -f1 "$WORK/skopeo.txt" | median)
kr=$(cut -d' ' -f2 "$WORK/kboot.txt" | median); sr=$(cut -d' ' -f2 "$WORK/skopeo.txt" | median)
kmax=$(cut -d' ' -f2 "$WORK/kboot.txt" | sort -n | tail -1)
printf '%-8s %10s %14s\n' tool "median s" "median RSS MB"
printf '%-8s %10.2f %14.1f\n' kboot "$kt" "$(echo "$kr/1024" | bc -l)" skopeo "$st" "$(echo "$sr/1024" | bc -l)"
printf 'all runs (s): kboot %s | skopeo %s\n' "$(cut -d' ' -f1 "$WORK/kboot.txt" | tr '\n' ' ')" \
  "$(cut -d' ' -f1 "$WORK/skopeo.txt" | tr '\n' ' ')"
printf 'time ratio kboot/skopeo: %.2f   RSS ratio: %.2f   kboot max RSS over runs: %.1f MB   runs: %s\n' \
  "$(echo "$kt/$st" | bc -l)" "$(echo "$kr/$sr" | bc -l)" "$(echo "$kmax/1024" | bc -l)" "$RUNS"
