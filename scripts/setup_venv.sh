#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the pinned requirements when they changed.
# Usage: scripts/setup_venv.sh requirements.txt|requirements-dev.txt
set -euo pipefail
cd "$(dirname "$0")/.."

requirements="${1:-requirements.txt}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [ ! -x .venv/bin/python ]; then
  echo "Creating the virtual environment in .venv with $("$python" --version)"
  "$python" -m venv .venv
fi

# Reinstall only when a requirements file changed since the last successful install.
stamp=".venv/.installed-$(basename "$requirements")"
digest="$(cat requirements*.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "Installing $requirements into .venv (torch comes from the local wheel cache when present)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$requirements"
  echo "$digest" > "$stamp"
fi
