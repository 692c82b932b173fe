#!/usr/bin/env bash
# Headless Chromium for the report.html test (tests/test_report_html.py): Debian's `chromium` package.
# Idempotent: does nothing when a chromium binary is already on PATH.  Needs root (CI runs as root);
# otherwise it says what to run and exits 0, and the browser test fails with the same hint.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "chromium not found: install it (sudo apt-get install -y chromium) for the report.html test" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
