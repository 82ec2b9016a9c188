#!/usr/bin/env bash
# The test command (README): installs what is missing, starts the local stack (Kafka in
# two regions with MirrorMaker 2 between them, PostgreSQL, the S3 server) and runs every
# test of the workspace against it, then the regional failover test on its own (it kills
# region A's broker and starts it again), then the offline checks of the Helm chart, the
# Dockerfile and the Terraform (tests/deploy/check.sh), a short run of every fuzz target
# (tests/fuzz/run.sh), then the short chaos suite. The
# stack keeps running afterwards;
# `tests/stack/stack.sh down` stops it.
#
#   tests/run.sh [CARGO TEST ARGS]     e.g. tests/run.sh -p guardian-integration
#                                      (with arguments, the failover test, the
#                                      deployment checks, the fuzzers and the chaos suite are not run)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$REPO/tests/stack/stack.sh" up --dr --secure
# shellcheck disable=SC1091
. "${GUARDIAN_STACK_DIR:-$REPO/.stack}/env"
cd "$REPO"
rc=0
cargo test --workspace --locked --no-fail-fast "$@" || rc=$?
if [ $# -eq 0 ]; then
  cargo test --locked -p guardian --test dr -- --ignored --nocapture || rc=$?
  bash "$REPO/tests/deploy/check.sh" || rc=$?
  # The fuzz targets, 20 s each on their corpora (tests/fuzz/run.sh; longer runs by hand).
  bash "$REPO/tests/fuzz/run.sh" 20 || rc=$?
  # The short chaos suite (about eight minutes): kills the broker and PostgreSQL, so it
  # runs alone, last; any violated hypothesis fails the run. Reports in .stack/chaos/.
  cargo run --locked -q -p guardian -- chaos run --report-dir "$REPO/.stack/chaos" \
    chaos/experiments/service-pod-failure.toml chaos/experiments/poison-and-replay.toml \
    chaos/experiments/hostile-input.toml \
    chaos/experiments/network-faults.toml chaos/experiments/storage-outage.toml \
    chaos/experiments/aggregator-failure.toml \
    chaos/experiments/broker-failure.toml \
    chaos/experiments/database-failure.toml || rc=$?
fi
exit $rc
