#!/usr/bin/env python3
"""The declared MSRV against what can be checked without that toolchain.

This machine (and CI) has one Rust toolchain, the current stable, and cannot fetch another, so
the workspace is not compiled with the `rust-version` it declares. What is checked instead:

- every workspace member declares the same `rust-version` (the workspace's);
- no dependency in the lock file declares a `rust-version` newer than ours (cargo would refuse
  to build it with our minimum);
- the toolchain in use is not older than the declared minimum.

Standard-library APIs newer than the declared version are caught by clippy's
`incompatible_msrv` lint, which reads `rust-version` (part of `just lint`). Language features
newer than it are not caught: that needs a build with the old toolchain.
"""

import json
import re
import subprocess
import sys


def version(text: str) -> tuple[int, ...]:
    parts = [int(part) for part in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--locked", "--format-version", "1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    members = set(meta["workspace_members"])
    ours = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["id"] in members}
    declared = set(ours.values())
    if len(declared) != 1 or None in declared:
        print(f"workspace members disagree on rust-version: {ours}", file=sys.stderr)
        return 1
    msrv = declared.pop()
    newer = sorted(
        (version(p["rust_version"]), p["name"], p["version"])
        for p in meta["packages"]
        if p["id"] not in members and p.get("rust_version") and version(p["rust_version"]) > version(msrv)
    )
    for needed, name, ver in newer:
        print(f"{name} {ver} needs Rust {'.'.join(map(str, needed))}", file=sys.stderr)
    if newer:
        print(f"the workspace declares rust-version {msrv}: raise it or hold those back", file=sys.stderr)
        return 1
    rustc = subprocess.run(["rustc", "--version"], check=True, capture_output=True, text=True).stdout
    if version(rustc.split()[1]) < version(msrv):
        print(f"{rustc.strip()} is older than the declared rust-version {msrv}", file=sys.stderr)
        return 1
    highest = max(
        (version(p["rust_version"]), p["name"])
        for p in meta["packages"]
        if p["id"] not in members and p.get("rust_version")
    )
    print(
        f"msrv: rust-version {msrv}; the most demanding dependency is {highest[1]} "
        f"(Rust {'.'.join(map(str, highest[0]))}); built here with {rustc.split()[1]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
