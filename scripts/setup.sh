#!/usr/bin/env bash
# Installs what building and booting Tessera needs on Debian 12, and nothing
# else: QEMU (qemu-system-arm provides qemu-system-aarch64), dtc, the arm64
# architecture in apt (for the Debian Linux guest payloads), and the pinned
# Rust toolchain with its targets. Safe to run any number of times.
set -euo pipefail

cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi

# The Linux guest payloads are Debian arm64 packages, which `cargo xtask`
# (xtask/src/linux.rs) downloads with `apt-get download` and checks against
# apt's SHA-256: apt must list arm64 packages. Nothing arm64 is installed.
lists_stale=""
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $sudo dpkg --add-architecture arm64
    lists_stale=1
fi

if ! command -v qemu-system-aarch64 >/dev/null || ! command -v dtc >/dev/null; then
    $sudo apt-get update
    lists_stale=""
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-arm device-tree-compiler
fi

if [ -n "$lists_stale" ]; then
    $sudo apt-get update
fi

# rust-toolchain.toml names the toolchain, its components and targets; these
# are no-ops when everything is present.
if command -v rustup >/dev/null; then
    rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
    rustup target add aarch64-unknown-none aarch64-unknown-none-softfloat
fi

# Debian's arm64 kernel and busybox-static, downloaded once, checked against
# apt's SHA-256 and cached in target/payloads (no network while the cache is
# valid). `cargo xtask test` fetches them as well, so a failure here is only
# a warning.
if command -v cargo >/dev/null; then
    cargo xtask payloads ||
        echo "setup.sh: warning: cannot fetch the Linux payloads now; cargo xtask test will retry" >&2
fi
