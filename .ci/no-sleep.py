#!/usr/bin/env python3
"""No sleep as synchronisation in tests.

A test waits for the event or state it means, with a deadline. This check reads every Rust
file under a `tests/` or `examples/` directory of the workspace, and the test harness
`crates/test-prosody`, and accepts a `sleep(` call only when

- it is the poll step of a loop that checks a deadline (the enclosing `loop`/`while` block,
  from its head to the sleep, mentions `deadline` or calls `timeout(`), or
- it is listed in .ci/sleep-allowlist.txt as `path | argument | reason`: a sleep that paces a
  sender or holds a process for a (random) time on purpose, where time itself is the point.

Allow-list entries that no longer match a sleep fail the check too, so the list stays true.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / ".ci" / "sleep-allowlist.txt"
SLEEP = re.compile(r"\bsleep\((.*)\)")
LOOP_HEAD = re.compile(r"^\s*(?:\}\s*)?(?:let\s+(?:mut\s+)?\w+\s*=\s*)?(?:loop|while)\b")
DEADLINE = re.compile(r"\bdeadline\b|\btimeout\(")


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def is_poll_step(lines: list[str], at: int) -> bool:
    """Whether the sleep on line `at` is the poll step of a deadline loop."""
    depth = indent(lines[at])
    for head in range(at - 1, -1, -1):
        line = lines[head]
        if not line.strip() or indent(line) >= depth:
            continue
        # `head` opens the sleep's block; a multi-line `while` condition starts a few lines
        # earlier, at the same indentation and not after the end of a statement.
        for start in range(head, max(head - 4, -1), -1):
            if start < head and lines[start].rstrip().endswith((";", "}")):
                break
            if indent(lines[start]) == indent(line) and LOOP_HEAD.match(lines[start]):
                # The deadline may also wrap the loop: `timeout(LIMIT, async { loop { … } })`
                # opens on the line just before the loop's head.
                wrapper = lines[start - 1 : start] if start > 0 else []
                return any(DEADLINE.search(text) for text in wrapper + lines[start : at + 1])
        return False
    return False


def main() -> int:
    allowed = {}
    for number, raw in enumerate(ALLOWLIST.read_text().splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in raw.split(" | ")]
        if len(parts) != 3 or not all(parts):
            print(f"{ALLOWLIST.name}:{number}: expected `path | argument | reason`", file=sys.stderr)
            return 1
        allowed[(parts[0], parts[1])] = False

    failures = []
    files = sorted(
        p
        for p in ROOT.rglob("*.rs")
        if (
            {"tests", "examples"} & set(p.relative_to(ROOT).parts)
            or p.relative_to(ROOT).parts[:2] == ("crates", "test-prosody")
        )
        and not {"target", ".run", ".venv"} & set(p.relative_to(ROOT).parts)
    )
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text().splitlines()
        for at, line in enumerate(lines):
            if line.lstrip().startswith("//"):
                continue
            match = SLEEP.search(line)
            if not match:
                continue
            key = (rel, match.group(1).strip())
            if key in allowed:
                allowed[key] = True
            elif not is_poll_step(lines, at):
                failures.append(f"{rel}:{at + 1}: {line.strip()}")

    for line in failures:
        print(f"sleep in a test outside a deadline loop: {line}", file=sys.stderr)
    stale = [f"{p} | {a}" for (p, a), used in allowed.items() if not used]
    for entry in stale:
        print(f"{ALLOWLIST.name}: no such sleep any more, remove the entry: {entry}", file=sys.stderr)
    if failures:
        print(
            "Wait for the event or state the test means, with a deadline; a sleep that paces or "
            f"measures time on purpose goes into .ci/{ALLOWLIST.name} with its reason.",
            file=sys.stderr,
        )
    if failures or stale:
        return 1
    print(f"no-sleep: {len(files)} test files, {len(allowed)} allowed sleeps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
