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
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
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

# Install Prosody from Debian's packages without starting its system service.
prosody:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v prosody >/dev/null && command -v prosodyctl >/dev/null; then exit 0; fi
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # policy-rc.d exit 101 forbids invoke-rc.d to start the service during the install.
    created=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        created=1
    fi
    trap '[ -n "$created" ] && $sudo rm -f /usr/sbin/policy-rc.d' EXIT
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq prosody lua-dbi-sqlite3 >/dev/null
    # Some images start it anyway; the tests run their own instances.
    $sudo systemctl stop prosody 2>/dev/null || $sudo service prosody stop 2>/dev/null || true

# Install Profanity (a real legacy OMEMO client, libsignal-protocol-c) and tmux to drive it.
profanity:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v profanity >/dev/null && command -v tmux >/dev/null; then exit 0; fi
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq profanity tmux >/dev/null
    profanity --version | grep -q "OMEMO support: Enabled" || { echo "this Profanity has no OMEMO" >&2; exit 1; }

# Everything CI checks: lint, dependency rules, all tests including the interop runs.
test: lint sans-io venv prosody profanity
    cargo test --workspace --locked
    # The fuzz corpora and regression inputs, replayed on stable (fuzz/ is its own workspace;
    # sharing the target directory reuses most of the build).
    CARGO_TARGET_DIR="{{root}}/target" cargo test --manifest-path fuzz/Cargo.toml --locked
    OMEMO_PYTHON="{{python}}" cargo test --workspace --locked -- --ignored

# SIGKILLs of the bot mid-stream, a Prosody restart, the sync-client killed mid-send, hostile
# peers and a flood, all against real Prosody instances (also part of `just test`).
# The reliability suite alone, printing what each run measured.
faults: prosody
    cargo test --locked -p echo-bot --test faults --test hostile --test flood -- --nocapture --test-threads=1
    cargo test --locked -p sync-client --test faults -- --nocapture --test-threads=1

# Benchmarks (criterion); each prints a summary table with its ratios and percentiles.
bench:
    cargo bench --locked -p omemo-crypto --bench crypto
    cargo bench --locked -p atm-trust --bench store

# End-to-end benchmark: N clients × M messages, plaintext echo vs OMEMO echo, on a local Prosody.
bench-e2e clients="4" messages="100": prosody
    BENCH_CLIENTS={{clients}} BENCH_MESSAGES={{messages}} cargo bench --locked -p echo-bot --bench e2e

state := root / ".run" / "up"

# Start Prosody (Docker where an engine runs, else the native package) with demo accounts, then the echo bot.
up: up-server
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f "{{state}}/docker" ]; then exit 0; fi
    if [ -f "{{state}}/echo-bot.pid" ] && kill -0 "$(cat "{{state}}/echo-bot.pid")" 2>/dev/null; then
        echo "echo-bot already running (pid $(cat "{{state}}/echo-bot.pid"))"
    else
        cargo build --locked -q -p echo-bot
        source "{{state}}/demo.env"
        nohup "{{root}}/target/debug/echo-bot" --config "{{root}}/echo-bot.toml" \
            >"{{state}}/echo-bot.out" 2>"{{state}}/echo-bot.log" &
        echo $! > "{{state}}/echo-bot.pid"
        for _ in $(seq 1 300); do
            grep -q "echo-bot ready" "{{state}}/echo-bot.out" 2>/dev/null && break
            kill -0 "$(cat "{{state}}/echo-bot.pid")" 2>/dev/null || { cat "{{state}}/echo-bot.log"; exit 1; }
            sleep 0.1
        done
        grep -q "echo-bot ready" "{{state}}/echo-bot.out" || { echo "echo-bot did not start"; exit 1; }
    fi
    source "{{state}}/demo.env"
    cat <<INFO
    $(cat "{{state}}/echo-bot.out")

    The echo bot is {{"$"}}DEMO_BOT_JID on 127.0.0.1:{{"$"}}DEMO_PORT (logs: .run/up/echo-bot.log).
    Talk to it from an OMEMO 2 client (Kaidan, or any QXmpp-based client) as:
      {{"$"}}DEMO_ALICE_JID  password in {{"$"}}DEMO_ALICE_PASSWORD_FILE
      {{"$"}}DEMO_BOB_JID    password in {{"$"}}DEMO_BOB_PASSWORD_FILE
    Server: 127.0.0.1 port {{"$"}}DEMO_PORT, StartTLS with the CA in {{"$"}}DEMO_CA_FILE.
    Compare the fingerprint above with the one your client shows for the bot.
    Stop everything with: just down
    INFO

# Start only Prosody with the demo accounts (to run the bot yourself with echo-bot.toml).
up-server:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{state}}"
    if docker info >/dev/null 2>&1; then
        docker compose up -d --build
        touch "{{state}}/docker"
        docker compose logs echo-bot | grep "echo-bot ready" || true
        echo "Prosody and the echo bot run in Docker (docker compose logs -f); stop with: just down"
        exit 0
    fi
    if [ -f "{{state}}/demo-server.pid" ] && kill -0 "$(cat "{{state}}/demo-server.pid")" 2>/dev/null; then
        exit 0
    fi
    just prosody
    cargo build --locked -q -p test-prosody --bin demo-server
    rm -f "{{state}}/demo.env"
    port=5222
    if (exec 3<>/dev/tcp/127.0.0.1/5222) 2>/dev/null; then port=15222; fi
    nohup "{{root}}/target/debug/demo-server" --state-dir "{{state}}" --port "$port" \
        >"{{state}}/demo-server.log" 2>&1 &
    echo $! > "{{state}}/demo-server.pid"
    for _ in $(seq 1 300); do
        [ -f "{{state}}/demo.env" ] && break
        kill -0 "$(cat "{{state}}/demo-server.pid")" 2>/dev/null || { cat "{{state}}/demo-server.log"; exit 1; }
        sleep 0.1
    done
    [ -f "{{state}}/demo.env" ] || { echo "Prosody did not start"; cat "{{state}}/demo-server.log"; exit 1; }
    cat "{{state}}/demo-server.log"

# Stop what `just up` started.
down:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f "{{state}}/docker" ]; then docker compose down; rm -f "{{state}}/docker"; exit 0; fi
    for name in echo-bot demo-server; do
        pidfile="{{state}}/$name.pid"
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            echo "stopped $name (pid $pid)"
        fi
        rm -f "$pidfile"
    done

# Fuzz one target with libFuzzer for SECONDS (targets: protobuf, decrypt, pep_xml, bookmarks).
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags. Findings
# land in fuzz/artifacts/TARGET/; copy real crashes to fuzz/artifacts/regressions/TARGET/.
fuzz target seconds="600":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    RUSTC_BOOTSTRAP=1 cargo fuzz run --features libfuzzer "{{target}}" "fuzz/corpus/{{target}}" -- -max_total_time={{seconds}} -print_final_stats=1
