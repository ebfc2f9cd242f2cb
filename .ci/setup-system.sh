#!/usr/bin/env bash
# System packages the tests need, installed as root. Idempotent: does nothing when all are present.
# - chromium: the headless browser for tests/test_serving_browser.py (driven by Python playwright with
#   executable_path=/usr/bin/chromium; `playwright install` is never used: it downloads its own browser).
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# Fonts for readable screenshots (chromium pulls some, but not always a sans-serif with full coverage).
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-system: all system packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: need root to install: ${missing[*]}" >&2
    exit 1
fi

echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q "${missing[@]}"
command -v chromium >/dev/null 2>&1 || { echo "setup-system: chromium still missing after install" >&2; exit 1; }
echo "setup-system: done"
