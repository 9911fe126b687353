#!/usr/bin/env python3
"""Fails when template.yaml, as SAM expands it, has a dependency cycle.

CloudFormation refuses such a stack when the change set is created ("Circular
dependency between resources"), and neither `sam validate --lint` nor
cfn-lint reports every cycle the SAM transform creates: an HTTP API's
definition names each function it invokes, so a function whose variables
name the API closes a loop (issue 18). Every branch of every Fn::If counts,
since any parameter set must deploy.

Usage: scripts/template-cycles.py [template.yaml]
"""

import importlib.util
import logging
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "template_permissions", os.path.join(ROOT, "scripts", "template-permissions.py"))
tp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tp)


def references(value, names, out):
    """Logical ids of `names` that `value` refers to (Ref, GetAtt, Sub)."""
    if isinstance(value, list):
        for v in value:
            references(v, names, out)
    elif isinstance(value, dict):
        for key, v in value.items():
            if key == "Ref" and isinstance(v, str) and v in names:
                out.add(v)
            elif key == "Fn::GetAtt":
                target = v[0] if isinstance(v, list) else str(v).split(".")[0]
                if target in names:
                    out.add(target)
            elif key == "Fn::Sub":
                text = v[0] if isinstance(v, list) else v
                if isinstance(text, str):
                    for var in re.findall(r"\$\{([^!}][^}]*)\}", text):
                        if var.split(".")[0] in names:
                            out.add(var.split(".")[0])
            references(v, names, out)


def cycles(resources):
    names = set(resources)
    graph = {}
    for name, res in resources.items():
        deps = set()
        references(res.get("Properties", {}), names, deps)
        depends_on = res.get("DependsOn", [])
        deps.update([depends_on] if isinstance(depends_on, str) else depends_on)
        graph[name] = deps & names

    # Tarjan's strongly connected components, iteratively.
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def main():
    logging.disable(logging.WARNING)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "template.yaml")
    with open(path) as f:
        cfn = tp.sam_translate(tp.expand_template(tp.load(f.read())))
    found = cycles(cfn["Resources"])
    for component in found:
        print("template-cycles: circular dependency between " + ", ".join(component))
    print(f"template-cycles: {len(cfn['Resources'])} resources after the SAM transform, "
          f"{len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
