#!/usr/bin/env bash
# The test command (README): installs what is missing, starts the local stack (Kafka,
# PostgreSQL, the S3 server) and runs every test of the workspace against it. The stack
# keeps running afterwards; `tests/stack/stack.sh down` stops it.
#
#   tests/run.sh [CARGO TEST ARGS]     e.g. tests/run.sh -p guardian-integration
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/tests/stack/stack.sh" up
# shellcheck disable=SC1091
. "${GUARDIAN_STACK_DIR:-$REPO/.stack}/env"
cd "$REPO"
cargo test --workspace --locked --no-fail-fast "$@"
