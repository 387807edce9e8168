#!/usr/bin/env bash
# Installs what the build needs beyond the Rust toolchain, on Debian/Ubuntu.
# libsignal's build script runs `protoc`; everything else comes from crates.io.
set -euo pipefail

if ! command -v protoc >/dev/null 2>&1; then
    echo "setup: installing protoc (Debian package protobuf-compiler)"
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
fi
protoc --version >/dev/null
