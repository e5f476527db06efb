#!/usr/bin/env bash
# The system packages `cargo build` needs, and nothing else: a C toolchain (the linker) and
# libseccomp's static library (kboot links it in, so the binary needs only the C library),
# and libelf and zlib headers for libbpf, which libcontainer's cgroupsv2_devices builds from
# source and links in (device rules on cgroup v2); libbpf-sys's build script needs pkg-config
# to find them (a fresh Debian chroot failed without it).
# The README's first command runs this before `cargo build`. Idempotent and quick when the
# packages are there (one dpkg query, no root needed); otherwise installs them with apt-get,
# through sudo when not run as root.
set -euo pipefail

PACKAGES=(build-essential pkg-config libseccomp-dev libelf-dev zlib1g-dev)

if ! command -v dpkg-query >/dev/null; then
  # Not Debian or Ubuntu: say what is needed instead of guessing a package manager.
  for lib in /usr/lib64/libseccomp.a /usr/lib/libseccomp.a /usr/lib/*-linux-*/libseccomp.a; do
    [ -f "$lib" ] && command -v cc >/dev/null && exit 0
  done
  echo "build-deps: install a C compiler and libseccomp's static library (libseccomp.a; e.g. Fedora: gcc libseccomp-static, Alpine: build-base libseccomp-static), or build with LIBSECCOMP_LINK_TYPE=dylib against the shared one" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "build-deps: run as root to install ${missing[*]} (or: apt-get install ${missing[*]})" >&2; exit 1; }
  as_root=(sudo)
fi
echo "build-deps: installing ${missing[*]}" >&2
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
