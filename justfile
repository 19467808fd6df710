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

# Formatting, clippy and rustdoc with warnings as errors, dependency rules, MSRV, no-sleep.
lint: deny msrv no-sleep
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked

# The advisories check needs the RustSec database, which CI cannot fetch: run
# `cargo deny check advisories` where it can.
# Dependency rules (deny.toml): licenses, duplicate versions, wildcards, sources.
deny:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo deny --version >/dev/null 2>&1; then
        echo "cargo-deny is missing: cargo install cargo-deny --locked (.ci/run does)" >&2
        exit 1
    fi
    cargo deny --locked check bans licenses sources

# .ci/msrv.py says what is checked without the old toolchain; clippy's incompatible_msrv
# lint covers std APIs.
# The declared rust-version against the dependencies' and the toolchain.
msrv:
    python3 .ci/msrv.py

# No sleep as synchronisation in tests (allowed ones: .ci/sleep-allowlist.txt).
no-sleep:
    python3 .ci/no-sleep.py

# Each is verified by building it from its package; the crates that depend on each other
# are resolved from a temporary local registry (cargo does that when it packages several).
# `cargo package` of every published crate (the list and metadata check: .ci/publishable.py).
package:
    #!/usr/bin/env bash
    set -euo pipefail
    crates=$(python3 .ci/publishable.py)
    args=()
    for crate in $crates; do args+=(-p "$crate"); done
    # Verifying a crate builds it against the .crate files just made for its workspace
    # dependencies, which cargo unpacks under $CARGO_HOME/registry/src/-<hash of this
    # checkout's path>/<name>-<version>. An unpacked copy from an earlier run at the same path
    # is reused as it is, so a second checkout of a newer commit there would be verified
    # against the old sources of its unchanged-version dependencies. Remove those copies.
    cargo_home=${CARGO_HOME:-$HOME/.cargo}
    for crate in $crates; do rm -rf "$cargo_home"/registry/src/-*/"$crate"-[0-9]*; done
    # --allow-dirty: a developer's `just test` with uncommitted changes packages them too (CI
    # packages a clean clone).
    cargo package --locked --allow-dirty "${args[@]}"

# The sans-IO crates (omemo-crypto, omemo-pep, bookmarks) must not depend on tokio, rusqlite or tokio-xmpp.
sans-io:
    #!/usr/bin/env bash
    set -euo pipefail
    for crate in omemo-crypto omemo-pep bookmarks; do
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

# Debian's Chromium and the Converse.js and puppeteer-core versions pinned in
# interop/converse/package-lock.json, for the browser test (apps/echo-bot/tests/converse.rs).
converse:
    #!/usr/bin/env bash
    set -euo pipefail
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    if ! [ -x /usr/bin/chromium ] || ! command -v npm >/dev/null; then
        $sudo apt-get update -qq
        packages="chromium"
        command -v npm >/dev/null || packages="$packages nodejs npm"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
    fi
    cd interop/converse
    stamp=node_modules/.installed-lock.json
    if [ -f "$stamp" ] && cmp -s "$stamp" package-lock.json; then exit 0; fi
    npm ci --no-audit --no-fund --loglevel=error
    cp package-lock.json "$stamp"

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
test: lint sans-io package venv prosody converse profanity
    # Builds the examples too (xmpp-core's tests run the dice_bot example). The one test that
    # compares answer times (another user's, with and without an attacker) runs on its own
    # afterwards, so that the other hostile tests of its binary do not load the machine
    # during its measurement.
    cargo test --workspace --locked -- --skip a_contact_with_a_huge_device_list_does_not_slow_the_others
    cargo test --locked -p echo-bot --test hostile -- --exact a_contact_with_a_huge_device_list_does_not_slow_the_others
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
bench: prosody
    cargo bench --locked -p omemo-crypto --bench crypto
    cargo bench --locked -p atm-trust --bench store
    cargo bench --locked -p bookmarks --bench merge
    cargo bench --locked -p sync-client --bench sync

# End-to-end benchmark: N clients × M messages, plaintext echo vs OMEMO echo, on a local Prosody;
# then a sequential sender (the Python reference client) against our bot and against the Python
# reference echo through a Prosody with default network settings.
bench-e2e clients="4" messages="100": prosody venv
    OMEMO_PYTHON="{{python}}" BENCH_CLIENTS={{clients}} BENCH_MESSAGES={{messages}} cargo bench --locked -p echo-bot --bench e2e

state := root / ".run" / "up"

# The bot reads echo-bot.toml, which takes the demo server's address from .run/up/echo-bot.include.toml.
# Start Prosody (Docker where an engine runs, else the native package) with demo accounts, then the echo bot.
up: up-server
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -f "{{state}}/docker" ]; then exit 0; fi
    if [ -f "{{state}}/echo-bot.pid" ] && kill -0 "$(cat "{{state}}/echo-bot.pid")" 2>/dev/null; then
        echo "echo-bot already running (pid $(cat "{{state}}/echo-bot.pid"))"
    else
        bot="${ECHO_BOT_BIN:-}"
        if [ -z "$bot" ]; then
            cargo build --locked -q -p echo-bot
            bot="${CARGO_TARGET_DIR:-{{root}}/target}/debug/echo-bot"
        fi
        rm -f "{{state}}/echo-bot.out"
        nohup "$bot" --config "{{root}}/echo-bot.toml" \
            >"{{state}}/echo-bot.out" 2>>"{{state}}/echo-bot.log" &
        echo $! > "{{state}}/echo-bot.pid"
        for _ in $(seq 1 300); do
            grep -q "echo-bot ready" "{{state}}/echo-bot.out" 2>/dev/null && break
            kill -0 "$(cat "{{state}}/echo-bot.pid")" 2>/dev/null || { tail -n 5 "{{state}}/echo-bot.log"; exit 1; }
            sleep 0.1
        done
        grep -q "echo-bot ready" "{{state}}/echo-bot.out" || { echo "echo-bot did not start"; exit 1; }
    fi
    source "{{state}}/demo.env"
    cat <<INFO
    $(cat "{{state}}/echo-bot.out")

    The echo bot is {{"$"}}DEMO_BOT_JID on 127.0.0.1:{{"$"}}DEMO_PORT (logs: .run/up/echo-bot.log).
    Talk to it from an OMEMO client (Conversations, Gajim, Dino, Monal, Profanity, Kaidan) as:
      {{"$"}}DEMO_ALICE_JID  password in {{"$"}}DEMO_ALICE_PASSWORD_FILE
      {{"$"}}DEMO_BOB_JID    password in {{"$"}}DEMO_BOB_PASSWORD_FILE
    Server: 127.0.0.1 port {{"$"}}DEMO_PORT, StartTLS with the CA in {{"$"}}DEMO_CA_FILE.
    Compare the bot's fingerprint above with the one your client shows: Converse.js, Kaidan
    and QXmpp-based clients show the Ed25519 form, XEP-0384 and python-omemo the Curve25519 form.
    Stop everything with: just down
    INFO

# Port 5222, or 15222 when something else listens on 5222; echo-bot.toml follows either way.
# Start only Prosody with the demo accounts (to run the bot yourself with echo-bot.toml).
up-server:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{state}}"
    port=5222
    if (exec 3<>/dev/tcp/127.0.0.1/5222) 2>/dev/null; then
        port=15222
        echo "port 5222 is taken; the demo server uses $port"
    fi
    if [ -z "${UP_NO_DOCKER:-}" ] && docker info >/dev/null 2>&1; then
        DEMO_PORT="$port" docker compose up -d --build
        touch "{{state}}/docker"
        docker compose logs echo-bot | grep -A3 "echo-bot ready" || true
        echo "Prosody (127.0.0.1:$port) and the echo bot run in Docker (docker compose logs -f); stop with: just down"
        exit 0
    fi
    if [ -f "{{state}}/demo-server.pid" ] && kill -0 "$(cat "{{state}}/demo-server.pid")" 2>/dev/null; then
        exit 0
    fi
    just prosody
    server="${DEMO_SERVER_BIN:-}"
    if [ -z "$server" ]; then
        cargo build --locked -q -p test-prosody --bin demo-server
        server="${CARGO_TARGET_DIR:-{{root}}/target}/debug/demo-server"
    fi
    rm -f "{{state}}/demo.env" "{{state}}/echo-bot.include.toml"
    nohup "$server" --state-dir "{{state}}" --port "$port" \
        >"{{state}}/demo-server.log" 2>&1 &
    echo $! > "{{state}}/demo-server.pid"
    for _ in $(seq 1 300); do
        [ -f "{{state}}/demo.env" ] && break
        kill -0 "$(cat "{{state}}/demo-server.pid")" 2>/dev/null || { cat "{{state}}/demo-server.log"; exit 1; }
        sleep 0.1
    done
    [ -f "{{state}}/demo.env" ] || { echo "Prosody did not start"; cat "{{state}}/demo-server.log"; exit 1; }
    source "{{state}}/demo.env"
    # echo-bot.toml includes this file: the bot connects to the port chosen above.
    printf '# Written by `just up-server` for echo-bot.toml; removed by `just down`.\n[account]\nserver = "127.0.0.1:%s"\n' \
        "$DEMO_PORT" > "{{state}}/echo-bot.include.toml"
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
            if kill -0 "$pid" 2>/dev/null; then
                echo "$name (pid $pid) did not stop within 5 s of SIGTERM; killing it"
                kill -KILL "$pid"
            fi
            echo "stopped $name (pid $pid)"
        fi
        rm -f "$pidfile"
    done
    rm -f "{{state}}/echo-bot.include.toml"

# Fuzz one target with libFuzzer for SECONDS (targets: protobuf, decrypt, pep_xml, bookmarks, sync).
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only flags. Findings
# land in fuzz/artifacts/TARGET/; copy real crashes to fuzz/artifacts/regressions/TARGET/.
fuzz target seconds="600":
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
    RUSTC_BOOTSTRAP=1 cargo fuzz run --features libfuzzer "{{target}}" "fuzz/corpus/{{target}}" -- -max_total_time={{seconds}} -print_final_stats=1
