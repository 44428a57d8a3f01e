#!/usr/bin/env bash
# Installs what building and testing pktpath needs, when it is missing; idempotent.
#   - rust-src for the nightly toolchain (the eBPF crate is built with -Z build-std=core)
#   - bpf-linker 0.10.x (the series that uses the LLVM inside the rust toolchain)
#   - cargo-nextest (the test runner)
#   - Debian packages the demo and the tests drive (iproute2, ping, setpriv, socat, tshark,
#     nftables; groff-base for the man page test; prometheus: the server and promtool for
#     the agent tests)
set -euo pipefail

[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"
say() { printf 'bootstrap: %s\n' "$*" >&2; }

if ! rustup toolchain list | grep -q '^nightly'; then
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed | grep -q '^rust-src'; then
    say "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi
if ! command -v bpf-linker >/dev/null || ! bpf-linker --version | grep -q ' 0\.10\.'; then
    say "installing bpf-linker 0.10 (about a minute)"
    cargo install bpf-linker --version '~0.10' --locked --force
fi
if ! command -v cargo-nextest >/dev/null; then
    say "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

packages=(iproute2 iputils-ping util-linux socat procps tshark nftables groff-base prometheus)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]}; run this script as root"; exit 1
    fi
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
