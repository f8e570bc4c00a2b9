#!/usr/bin/env bash
# Installs the PyTorch + diffusers reference used by bench/diffusers_reference.py and
# bench/parity_fixtures.py into .venv-bench (pinned; from PyPI). Not needed by the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv-bench
.venv-bench/bin/pip install --quiet torch==2.15.0 diffusers==0.42.1 transformers==5.23.0 safetensors
.venv-bench/bin/python -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
