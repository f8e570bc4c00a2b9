#!/usr/bin/env bash
# Installs the references used by bench/diffusers_reference.py, bench/side_by_side.sh and
# bench/parity_fixtures.py into .venv-bench (pinned; from PyPI): PyTorch + diffusers, and
# OpenVINO. Not needed by the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-bench/bin/python ] || python3 -m venv .venv-bench
.venv-bench/bin/pip install --quiet torch==2.15.0 diffusers==0.42.1 transformers==5.23.0 safetensors \
  openvino==2026.4.1 nncf==3.4.0
.venv-bench/bin/python -c "import torch, diffusers, openvino, nncf; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'openvino', openvino.__version__)"
