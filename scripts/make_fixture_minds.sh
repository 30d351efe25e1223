#!/usr/bin/env bash
# Make the fixture minds under tests/data/ with the pmm releases that wrote each layout: the
# source of each commit is unpacked (git archive) into a temp dir and its own CLI and ledger
# API write the file, so every byte is what that pmm wrote. Run from the repository root:
#     scripts/make_fixture_minds.sh [PYTHON]
# The files are committed; tests/test_migrations_and_upcasters.py reads copies of them.
set -euo pipefail
PY=${1:-python3}
OUT=$PWD/tests/data
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export XDG_STATE_HOME=$WORK/state XDG_DATA_HOME=$WORK/data XDG_CONFIG_HOME=$WORK/config
unset PMM_MIND

# schema version: the last commit whose pmm wrote it
RELEASES=(
  "1 681cf5d^"   # before the sealed projection cache (0002_cache_mac)
  "2 504caf0^"   # before the stemmed search index (0003_fts_porter)
  "3 557ed8b^"   # before the recall vectors (0004_event_vectors)
  "4 d9e8557"    # schema 4, before trait_adjusted version 2 (its upcaster)
)

for release in "${RELEASES[@]}"; do
  read -r version commit <<<"$release"
  src=$WORK/pmm-$version
  mkdir -p "$src"
  git archive "$commit" pmm | tar -x -C "$src"
  mind=$OUT/mind-schema-$version.db
  rm -f "$mind"
  # from inside $src: `python -m` puts the working directory first on sys.path
  run() { (cd "$src" && PYTHONPATH=$src "$PY" -m pmm --mind "$mind" "$@" >/dev/null); }
  run init --name Ada
  run remember "my dogs were sleeping on the sofa"
  run remember "a café au lait every morning"
  run remember "I am running before breakfast"
  if [ "$version" = 4 ]; then
    # trait steps as a reflection wrote them at version 1: any finite number, bounded only
    # when replayed (the upcaster clamps them into [-1, 1])
    (cd "$src" && PYTHONPATH=$src "$PY" - "$mind") <<'EOF'
import sys
from pathlib import Path

from pmm.domain.events import Draft
from pmm.ledger.store import Ledger

with Ledger.open(Path(sys.argv[1]), write=True) as mind:
    [reflection] = mind.append([Draft("reflection_recorded", "I like mornings.",
                                      {"first_id": 1, "last_id": 4, "trigger": "manual"})])
    mind.append([Draft("trait_adjusted", "curious", {"trait": "openness", "delta": 0.3,
                                                     "reflection": reflection.id}),
                 Draft("trait_adjusted", "calm", {"trait": "neuroticism", "delta": -3}),
                 Draft("trait_adjusted", "tidy", {"trait": "conscientiousness", "delta": 1e16}),
                 Draft("trait_adjusted", "warm", {"trait": "agreeableness", "delta": 0.02})])
EOF
  fi
  made=$("$PY" -c "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(
      \"SELECT value FROM pmm_meta WHERE key = 'schema_version'\").fetchone()[0])" "$mind")
  [ "$made" = "$version" ] || { echo "$mind: schema $made, not $version" >&2; exit 1; }
  chmod 0644 "$mind"
  echo "wrote $mind (schema $version, pmm at $commit)"
done
