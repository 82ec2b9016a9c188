#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads bytes from outside (fuzz/: cargo-fuzz
# on libFuzzer, on the stable toolchain, sanitizer coverage without ASan). Installs
# cargo-fuzz once (cached beside the stack's tools), builds the targets in a target
# directory of their own, runs each for SECONDS on its corpus (fuzz/corpus/<target>) and
# prints a table: executions, corpus, crashes. New inputs go to a scratch directory, or
# into the corpus with --grow; a crash leaves its input in fuzz/artifacts/<target>/ and
# fails the run.
#
#   tests/fuzz/run.sh [--grow] [SECONDS] [TARGET...]     (default 20 s, every target)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${GUARDIAN_TOOLS_DIR:-$HOME/.cache/phoenix-guardian/tools}
FUZZ_VERSION=0.13.2
CARGO_FUZZ=$TOOLS/cargo-fuzz-$FUZZ_VERSION/bin/cargo-fuzz
say() { echo "fuzz: $*" >&2; }

grow=0
if [ "${1:-}" = "--grow" ]; then grow=1; shift; fi
seconds=${1:-20}
shift || true
cd "$REPO/fuzz"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^guardian-fuzz$')

mkdir -p "$TOOLS"
if [ ! -x "$CARGO_FUZZ" ]; then
  say "building cargo-fuzz $FUZZ_VERSION (about 2 minutes, cached in $TOOLS)"
  cargo install "cargo-fuzz@$FUZZ_VERSION" --locked --root "$TOOLS/cargo-fuzz-$FUZZ_VERSION" \
    >"$TOOLS/cargo-fuzz-install.log" 2>&1 || { tail -n 20 "$TOOLS/cargo-fuzz-install.log" >&2; say "cargo-fuzz build failed"; exit 1; }
fi
export CARGO_TARGET_DIR=${GUARDIAN_FUZZ_TARGET_DIR:-$HOME/.cache/phoenix-guardian/fuzz-target}
say "building ${#targets[@]} targets (release, sanitizer coverage; the first build takes a few minutes)"
"$CARGO_FUZZ" build -s none >"$TOOLS/fuzz-build.log" 2>&1 || { tail -n 30 "$TOOLS/fuzz-build.log" >&2; say "build failed"; exit 1; }
bin=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=0
rows=()
for t in "${targets[@]}"; do
  corpus=$REPO/fuzz/corpus/$t
  mkdir -p "$corpus" "$REPO/fuzz/artifacts/$t" "$scratch/$t"
  first=$scratch/$t
  [ $grow -eq 1 ] && first=$corpus
  say "$t: ${seconds}s on $(find "$corpus" -type f | wc -l) corpus inputs"
  log=$scratch/$t.log
  rc=0
  "$bin/$t" "$first" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$REPO/fuzz/artifacts/$t/" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -1)
  units=$(find "$first" "$corpus" -type f | sort -u | wc -l)
  if [ $rc -ne 0 ]; then
    failed=1
    rows+=("| $t | ${secs:-?} | ${runs:-?} | $units | crash: see fuzz/artifacts/$t/ |")
    grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -n 8 >&2 || true
  else
    rows+=("| $t | $secs | $runs | $units | none |")
  fi
done
echo "| target | seconds | executions | corpus | crashes |"
echo "|---|---:|---:|---:|---|"
printf '%s\n' "${rows[@]}"
exit $failed
