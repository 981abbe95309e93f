#!/usr/bin/env bash
# The long fuzz run of the wire parser and of the broker's live agent endpoint (tests/security/test_fuzz.py).
# The default test run has a short version of each; this one runs BATCHTUNNEL_FUZZ_EXAMPLES examples
# (default 5000) against the endpoint and eight times as many against the parser.
#   scripts/fuzz.sh [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
SETUP_APT="" scripts/setup.sh test,broker,fast
export BATCHTUNNEL_FUZZ_EXAMPLES="${BATCHTUNNEL_FUZZ_EXAMPLES:-5000}"
# All of test_fuzz.py: the short and long runs, then the check that the broker is back to its baseline.
exec .venv/bin/python -m pytest -m "fuzz or not fuzz" -p no:cacheprovider tests/security/test_fuzz.py "$@"
