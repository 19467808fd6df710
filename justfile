# OMEMO 2 echo bot and bookmark sync client: developer commands.
# `just` lists the recipes; `just test` is what CI runs.

set shell := ["bash", "-euo", "pipefail", "-c"]

root := justfile_directory()
venv := root / ".venv"
python := venv / "bin" / "python"

# List the recipes.
default:
    @just --list

# Format all Rust code.
fmt:
    cargo fmt --all

# Formatting check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# The sans-IO crates must not depend on tokio, rusqlite or tokio-xmpp.
sans-io:
    #!/usr/bin/env bash
    set -euo pipefail
    for crate in omemo-crypto omemo-pep; do
        if ! [ -d "crates/$crate" ]; then continue; fi
        tree=$(cargo tree --locked -e normal -p "$crate" --prefix none)
        if grep -E '^(tokio|tokio-xmpp|rusqlite|libsqlite3-sys|mio) ' <<<"$tree"; then
            echo "$crate pulls in an I/O dependency (see above)" >&2
            exit 1
        fi
        echo "$crate: sans-IO dependency tree ok"
    done

# Python venv with the OMEMO reference packages used by the interop peers.
venv:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.requirements.stamp"
    if [ -f "$stamp" ] && cmp -s "$stamp" interop/requirements.txt; then exit 0; fi
    python3 -m venv "{{venv}}"
    "{{venv}}/bin/pip" install --quiet --disable-pip-version-check -r interop/requirements.txt
    cp interop/requirements.txt "$stamp"

# Everything CI checks: lint, dependency rules, all tests including the interop runs.
test: lint sans-io venv
    cargo test --workspace --locked
    OMEMO_PYTHON="{{python}}" cargo test --workspace --locked -- --ignored

# Benchmarks (criterion); each prints a summary table with its ratios and percentiles.
bench:
    cargo bench --locked -p omemo-crypto --bench crypto
    if [ -d crates/atm-trust/benches ]; then cargo bench --locked -p atm-trust; fi
