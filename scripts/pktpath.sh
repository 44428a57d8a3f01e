#!/usr/bin/env bash
# Builds pktpath (installing what is missing) and runs it with the given arguments.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
bash scripts/bootstrap.sh
cargo build --locked --release -p pktpath
exec ./target/release/pktpath "$@"
