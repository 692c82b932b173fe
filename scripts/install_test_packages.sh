#!/usr/bin/env bash
# Debian packages some tests drive: chromium (headless, renders report.html: tests/test_report_html.py) and curl
# (the engine benchmark's C client: tests/test_benchmarks.py).  Idempotent: installs only what is missing from
# PATH.  Needs root (CI runs as root); otherwise it says what to run and exits 0, and those tests fail with the
# same hint on CI.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "${missing[*]} not found: install (sudo apt-get install -y ${missing[*]}) for the tests that drive them" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
