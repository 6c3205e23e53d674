#!/usr/bin/env bash
# scripts/install_browser.sh: headless Chromium and its driver for tests/test_label.py (the labeling page in a
# real browser), from Debian's packages. Idempotent: does nothing where both are installed already.
# selenium itself is a Python package (pip install selenium); it is pointed at /usr/bin/chromedriver and never
# downloads a driver of its own.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "chromium and chromedriver are installed: $(chromium --version 2>/dev/null | head -1)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium chromium-driver
chromium --version
