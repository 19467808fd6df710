#!/usr/bin/env python3
"""Lists the workspace crates that are published (no `publish = false`), one per line, after
checking that each carries what crates.io shows and needs: description, license, readme
(present in the crate), documentation, keywords, categories and rust-version; and that its
dependencies on other workspace crates carry a version (a path alone would not publish).

`repository` is not required yet: the project has no public repository URL. Add it to
[workspace.package] (and `repository.workspace = true` to the libraries) when it has one,
and to REQUIRED below.
"""

import json
import pathlib
import subprocess
import sys

REQUIRED = ["description", "license", "readme", "documentation", "keywords", "categories", "rust_version"]


def main() -> int:
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--no-deps", "--locked", "--format-version", "1"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    problems = []
    names = []
    for package in meta["packages"]:
        if package["publish"] == []:
            continue
        name = package["name"]
        names.append(name)
        for field in REQUIRED:
            if not package.get(field):
                problems.append(f"{name}: no {field.replace('_', '-')}")
        readme = package.get("readme")
        if readme and not (pathlib.Path(package["manifest_path"]).parent / readme).is_file():
            problems.append(f"{name}: readme {readme} does not exist")
        for dep in package["dependencies"]:
            if dep.get("path") and dep["kind"] != "dev" and dep["req"] == "*":
                problems.append(f"{name}: path dependency {dep['name']} has no version")
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print("\n".join(sorted(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
