#!/usr/bin/env bash
# One command: install, then fine-tune on the Python standard library docs, offline, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/finetune-assets demo "$@"
