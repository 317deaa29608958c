#!/usr/bin/env bash
# Sets up, builds, and trains a small language model on the text of Debian's fortunes in local mode:
# a coordinator, 2 parameter servers and 2 workers on 127.0.0.1. Extra arguments go to `psctl local`
# (e.g. --steps 500, --data FILE, --servers 3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bazel build //client:psctl //coordinator:ps_coordinator //server:ps_server //worker:ps_worker

corpus="${PSRV_DEMO_CORPUS:-}"
if [ -z "$corpus" ]; then
  corpus="$(mktemp -d)/fortunes.txt"
  # Every fortune file, without the "%" separator lines.
  find /usr/share/games/fortunes -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' \
    ! -name 'ascii-art' ! -name 'art' -print0 | sort -z | xargs -0 cat | grep -v '^%$' > "$corpus"
fi
echo "demo: training on $corpus ($(wc -c < "$corpus") bytes)"
exec bazel-bin/client/psctl local --servers 2 --workers 2 --data "$corpus" \
  --spec examples/demo.yaml "$@"
