#!/bin/bash
# No source line over the limit (default 400): the formatter (biome.json) wraps code at
# 160 columns; only long string literals (messages, test names) go past it.
set -euo pipefail
limit=${1:-400}
cd "$(dirname "$0")/.."
long=$(git ls-files '*.ts' '*.mjs' | xargs awk -v limit="$limit" 'length > limit { printf "%s:%d: %d characters (limit %d)\n", FILENAME, FNR, length, limit }')
if [ -n "$long" ]; then
  echo "$long"
  exit 1
fi
