#!/usr/bin/env python3
"""Groups the Lambda functions into as few cargo invocations as possible
without changing what any of them links.

One `cargo build -p a -p b` unifies features: every package gets the union
of the features the selected packages ask of it. A function built alone
resolves its own graph (what `cargo tree -p <function>` prints, and what the
dependency guard test tools/devstack/tests/function_deps.rs checks). So two
functions may share an invocation only when every package both graphs
contain is resolved with the same features in each: then the union changes
nothing for either, and each binary is the one it would be built alone.
Packages only one of them has are harmless (they are not linked into the
other binary and add no features to a package it has).

Prints one line per group: the function names separated by spaces.
Usage: build_groups.py [function ...]   (default: every crate in functions/)
"""

import os
import subprocess
import sys


TARGET = "aarch64-unknown-linux-gnu"


def graph(root, function):
    """package id ("name vX.Y.Z") -> the feature sets it is built with
    (more than one when it is both a build and a normal dependency)."""
    out = subprocess.run(
        ["cargo", "tree", "--locked", "-p", function, "-e", "normal,build",
         "--target", TARGET, "--prefix", "none", "--format", "{p}|{f}"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    resolved = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        # " (*)" ends the line of a package printed before; path packages
        # carry "(/path)" after their version.
        package, features = line.removesuffix(" (*)").split("|", 1)
        package = package.split(" (")[0].strip()
        resolved.setdefault(package, set()).add(
            frozenset(f for f in features.split(",") if f))
    resolved.pop(next(p for p in resolved if p.split(" ")[0] == function), None)
    return {package: frozenset(sets) for package, sets in resolved.items()}


def compatible(group, candidate):
    for package, features in candidate.items():
        if package in group and group[package] != features:
            return False
    return True


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    functions = sys.argv[1:] or sorted(os.listdir(os.path.join(root, "functions")))
    graphs = {f: graph(root, f) for f in functions}
    # Largest graphs first: they fix the features the smaller ones must match.
    groups = []  # (union graph, [functions])
    for function in sorted(functions, key=lambda f: -len(graphs[f])):
        for union, members in groups:
            if compatible(union, graphs[function]):
                union.update(graphs[function])
                members.append(function)
                break
        else:
            groups.append((dict(graphs[function]), [function]))
    for _, members in groups:
        print(" ".join(sorted(members)))


if __name__ == "__main__":
    main()
