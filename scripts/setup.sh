#!/usr/bin/env bash
# Installs what building and booting Tessera needs on Debian 12, and nothing
# else: QEMU (qemu-system-arm provides qemu-system-aarch64), dtc, and the
# pinned Rust toolchain with its targets. Safe to run any number of times.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v qemu-system-aarch64 >/dev/null || ! command -v dtc >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
    fi
    $sudo apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-arm device-tree-compiler
fi

# rust-toolchain.toml names the toolchain, its components and targets; these
# are no-ops when everything is present.
if command -v rustup >/dev/null; then
    rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install
    rustup target add aarch64-unknown-none aarch64-unknown-none-softfloat
fi
