#!/usr/bin/env bash
# Install Debian's headless-capable chromium for the gallery tests (tests/test_gallery.py).
# Idempotent: does nothing when a chromium binary is already on PATH.
set -euo pipefail

for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
        echo "install_chromium: $("$bin" --version 2>/dev/null || echo "$bin") already installed"
        exit 0
    fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium
chromium --version
