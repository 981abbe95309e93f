#!/usr/bin/env bash
# Install what the benchmark needs (openssh-server for ssh -L), then run it. Arguments go to bench/run.py
# (python -m bench.run, from the repository root).
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_APT="openssh-server openssh-client valgrind" scripts/setup.sh test,broker,fast
exec .venv/bin/python -m bench.run "$@"
