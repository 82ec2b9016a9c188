#!/usr/bin/env bash
# The dependency audit: `cargo deny check` (advisories, licences, bans, sources; deny.toml)
# against the offline snapshot of the RustSec advisory database. Installs cargo-deny once
# (cached beside the stack's tools) and copies the snapshot where cargo-deny reads it, as
# a git repository (cargo-deny reads the commit time); nothing is fetched from the network
# but the crates themselves (`cargo fetch`, from crates.io).
#
#   tests/audit/deny.sh [CHECK...]        e.g. tests/audit/deny.sh advisories
#
# GUARDIAN_ADVISORY_DB: the snapshot (default: ../shared/advisory-db beside the checkout,
# else /work/shared/advisory-db).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${GUARDIAN_TOOLS_DIR:-$HOME/.cache/phoenix-guardian/tools}
DENY_VERSION=0.20.2
DENY=$TOOLS/cargo-deny-$DENY_VERSION/bin/cargo-deny
SNAPSHOT=${GUARDIAN_ADVISORY_DB:-}
if [ -z "$SNAPSHOT" ]; then
  for d in "$REPO/../shared/advisory-db" /work/shared/advisory-db; do
    [ -d "$d/crates" ] && { SNAPSHOT=$d; break; }
  done
fi
say() { echo "audit: $*" >&2; }

[ -n "$SNAPSHOT" ] && [ -d "$SNAPSHOT/crates" ] || { say "no advisory database snapshot at $SNAPSHOT (set GUARDIAN_ADVISORY_DB)"; exit 2; }
mkdir -p "$TOOLS"
if [ ! -x "$DENY" ]; then
  say "building cargo-deny $DENY_VERSION (about 8 minutes on 2 cores, cached in $TOOLS)"
  cargo install "cargo-deny@$DENY_VERSION" --locked --root "$TOOLS/cargo-deny-$DENY_VERSION" \
    >"$TOOLS/cargo-deny-install.log" 2>&1 || { tail -n 20 "$TOOLS/cargo-deny-install.log" >&2; say "cargo-deny build failed"; exit 1; }
fi

# The directory cargo-deny derives from the database URL in deny.toml.
export GUARDIAN_ADVISORY_DBS=$TOOLS/advisory-dbs
DB=$GUARDIAN_ADVISORY_DBS/advisory-db-3157b0e258782691
stamp=$(cat "$SNAPSHOT/SNAPSHOT.md" 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$DB/.snapshot-$stamp" ]; then
  say "copying the advisory database snapshot from $SNAPSHOT"
  rm -rf "$DB"; mkdir -p "$DB"
  cp -r "$SNAPSHOT/." "$DB/"
  chmod -R u+w "$DB"
  (cd "$DB" && git init -q && git add -A && git -c user.name=snapshot -c user.email=snapshot@localhost \
      commit -qm "advisory-db snapshot" && touch ".snapshot-$stamp")
fi

cd "$REPO"
cargo fetch --locked >/dev/null 2>&1 || cargo fetch --locked
say "cargo deny check ${*:-(all)} with the advisory snapshot of $(grep -o '20[0-9-]*' "$SNAPSHOT/SNAPSHOT.md" | head -1)"
"$DENY" --offline check "$@"
