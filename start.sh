#!/usr/bin/env bash
# Start ResNet Lab on http://localhost:8501 (set PORT to change it). Creates .venv on first use.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup_venv.sh requirements.txt
exec .venv/bin/python -m streamlit run app.py --server.port "${PORT:-8501}" --server.address "${ADDRESS:-localhost}"
