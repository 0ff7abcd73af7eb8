#!/bin/sh
# Install Debian's headless Chromium and its chromedriver if missing (used by tests/test_web.py).
# Idempotent: does nothing when both binaries are already there. Needs root (or sudo) on Debian 12.
# fonts-liberation is added so that pages render readable text even on a minimal image.
set -eu

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium and chromedriver already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "ensure_chromium.sh: run as root (or install sudo) to apt-get install chromium chromium-driver" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium.sh: apt-get not found; install Chromium and chromedriver with your package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-liberation

/usr/bin/chromium --version
/usr/bin/chromedriver --version
