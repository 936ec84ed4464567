#!/usr/bin/env bash
# Run the whole test suite: core unit tests, AppTest page tests and real-browser tests.
# Creates .venv on first use. Browser tests need Debian's chromium (/usr/bin/chromium); as root,
# this script installs it with apt-get when it is missing, otherwise those tests are skipped.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh requirements-dev.txt

if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "Installing Debian's chromium for the browser tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

exec .venv/bin/python -m pytest "$@"
