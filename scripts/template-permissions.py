#!/usr/bin/env python3
"""Proves a template change widened no permission.

Usage: scripts/template-permissions.py [REV]   (run with .cache/venv/bin/python)

Renders, for every IAM role template.yaml creates (the implicit roles of SAM
functions included), the set of grants it ends up with, and compares it with
the same rendering of template.yaml at git revision REV (default: the merge
base with main). Offline: Fn::ForEach is expanded here, SAM Globals, policy
templates and implicit roles by the SAM translator (samtranslator, which
bundles its policy templates and the AWS managed policy names), and customer
managed policies (AWS::IAM::ManagedPolicy, AWS::IAM::Policy) are inlined into
the roles they are attached to.

A grant is (conditions, effect, action, resource, statement condition):
`conditions` are the template conditions it depends on (an `!If` branch, the
Condition of the policy resource), resources are normalised so `!Ref X`,
`!Sub "${X}"` and SAM's `!Sub ["${secretArn}", {secretArn: !Ref X}]` compare
equal. AWS managed policies appear as their ARN, trust policies as
`sts:AssumeRole` grants to their principal. Prints `identical` and exits 0,
or the grants each role gained or lost and exits 1.
"""

import copy
import logging
import json
import os
import re
import subprocess
import sys

from cfnlint.decode import cfn_yaml
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REV = "3c17b9f"


def git(*args):
    return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True, text=True).stdout


def load(text):
    return json.loads(json.dumps(cfn_yaml.loads(text)))


# --- Fn::ForEach (AWS::LanguageExtensions), literal collections only --------

def substitute(value, ident, item):
    alnum = re.sub(r"[^A-Za-z0-9]", "", item)

    def text(s):
        return s.replace("${%s}" % ident, item).replace("&{%s}" % ident, alnum)

    if isinstance(value, str):
        return text(value)
    if isinstance(value, list):
        return [substitute(v, ident, item) for v in value]
    if isinstance(value, dict):
        if list(value) == ["Ref"] and value["Ref"] == ident:
            return item
        return {text(k): substitute(v, ident, item) for k, v in value.items()}
    return value


def resolve_static(value):
    """After substitution: `Ref: !Sub X` with a literal X becomes `Ref: X`."""
    if isinstance(value, list):
        return [resolve_static(v) for v in value]
    if isinstance(value, dict):
        value = {k: resolve_static(v) for k, v in value.items()}
        if list(value) == ["Ref"] and isinstance(value["Ref"], dict) and list(value["Ref"]) == ["Fn::Sub"]:
            inner = value["Ref"]["Fn::Sub"]
            if isinstance(inner, str) and "${" not in inner:
                return {"Ref": inner}
        if list(value) == ["Fn::GetAtt"] and isinstance(value["Fn::GetAtt"], list):
            parts = value["Fn::GetAtt"]
            if all(isinstance(p, str) for p in parts):
                return {"Fn::GetAtt": parts}
        return value
    return value


def expand_for_each(section):
    if not isinstance(section, dict):
        return section
    out = {}
    for key, value in section.items():
        if key.startswith("Fn::ForEach::"):
            ident, collection, fragment = value
            if not isinstance(collection, list):
                sys.exit(f"{key}: only literal collections are expanded here")
            for item in collection:
                generated = expand_for_each(resolve_static(substitute(fragment, ident, item)))
                for k, v in generated.items():
                    if k in out:
                        sys.exit(f"{key}: {k} generated twice")
                    out[k] = v
        else:
            out[key] = value
    return out


def expand_template(doc):
    for section in ("Conditions", "Resources", "Outputs"):
        if section in doc:
            doc[section] = expand_for_each(doc[section])
    transform = doc.get("Transform")
    if isinstance(transform, list):
        doc["Transform"] = [t for t in transform if t != "AWS::LanguageExtensions"]
        if len(doc["Transform"]) == 1:
            doc["Transform"] = doc["Transform"][0]
    return doc


# --- SAM ------------------------------------------------------------------------

def sam_translate(doc):
    params = {}
    for name, p in (doc.get("Parameters") or {}).items():
        params[name] = p.get("Default", "x")
    # Code locations do not bear on permissions; the translator wants S3 URIs.
    for res in doc.get("Resources", {}).values():
        if res.get("Type") == "AWS::Serverless::Function":
            res.setdefault("Properties", {})["CodeUri"] = "s3://bucket/code.zip"
    translator = Translator(None, Parser())
    return translator.translate(
        sam_template=copy.deepcopy(doc),
        parameter_values=params,
        get_managed_policy_map=lambda: {},
    )


# --- grants ---------------------------------------------------------------------

def normalise(value):
    """A canonical text for a resource / principal expression."""
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
            for var, sub in local.items():
                if text == "${%s}" % var:
                    return normalise(sub)
            for var, sub in local.items():
                text = text.replace("${%s}" % var, "${%s}" % json.dumps(normalise(sub)))
            m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\}", text)
            if m:
                return "Ref:" + m.group(1)
            m = re.fullmatch(r"\$\{([A-Za-z0-9]+)\.([A-Za-z0-9.]+)\}", text)
            if m:
                return "GetAtt:%s.%s" % m.groups()
            return "Sub:" + text
        if fn == "Ref":
            return "Ref:" + arg
        if fn == "Fn::GetAtt":
            parts = arg.split(".", 1) if isinstance(arg, str) else arg
            return "GetAtt:%s.%s" % tuple(parts)
        return {fn: normalise(arg)}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def text(value):
    value = normalise(value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def branches(value, conds):
    """Yield (conditions, value) for each way an `!If` tree can resolve."""
    if isinstance(value, dict) and list(value) == ["Fn::If"]:
        cond, yes, no = value["Fn::If"]
        yield from branches(yes, conds + (cond,))
        yield from branches(no, conds + ("!" + cond,))
    elif isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield conds, value


def as_list(value):
    return value if isinstance(value, list) else [value]


def statement_grants(document, conds, out):
    for dconds, doc in branches(document, conds):
        for sconds, statement in branches(doc.get("Statement", []), dconds):
            for c1, st in ((c, s) for item in as_list(statement) for c, s in branches(item, sconds)):
                effect = st.get("Effect")
                condition = text(st["Condition"]) if "Condition" in st else ""
                actions = [("NOT " if "NotAction" in st else "") + a for a in as_list(st.get("Action", st.get("NotAction")))]
                if "Principal" in st:
                    resources = ["principal " + text(st["Principal"])]
                else:
                    resources = [("NOT " if "NotResource" in st else "") + text(r) for r in as_list(st.get("Resource", st.get("NotResource")))]
                for a in actions:
                    for r in resources:
                        # A condition met twice (an `!If` on the policy of a
                        # conditional managed policy) is the same condition.
                        out.add((" & ".join(sorted(set(c1))), effect, text(a), r, condition))


def role_grants(cfn):
    resources = cfn["Resources"]
    roles = {}
    for rid, res in resources.items():
        if res.get("Type") != "AWS::IAM::Role":
            continue
        base = (res["Condition"],) if "Condition" in res else ()
        grants = set()
        props = res.get("Properties", {})
        statement_grants(props.get("AssumeRolePolicyDocument", {}), base, grants)
        for conds, policy in (b for p in props.get("Policies", []) for b in branches(p, base)):
            statement_grants(policy["PolicyDocument"], conds, grants)
        for conds, arn in (b for p in props.get("ManagedPolicyArns", []) for b in branches(p, base)):
            target = arn.get("Ref") if isinstance(arn, dict) else None
            if target in resources and resources[target]["Type"] == "AWS::IAM::ManagedPolicy":
                mp = resources[target]
                extra = (mp["Condition"],) if "Condition" in mp else ()
                statement_grants(mp["Properties"]["PolicyDocument"], conds + extra, grants)
            else:
                grants.add((" & ".join(sorted(set(conds))), "Allow", "managed policy", text(arn), ""))
        roles[rid] = grants
    # Policies that name their roles.
    for rid, res in resources.items():
        if res.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            extra = (res["Condition"],) if "Condition" in res else ()
            for role in res.get("Properties", {}).get("Roles", []):
                name = role.get("Ref") if isinstance(role, dict) else role
                statement_grants(res["Properties"]["PolicyDocument"], extra, roles.setdefault(name, set()))
    return roles


def render(text_):
    return role_grants(sam_translate(expand_template(load(text_))))


def main():
    logging.disable(logging.WARNING)  # samtranslator's metrics notice
    # The translator wants a region for ARNs; any will do offline.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    rev = sys.argv[1] if len(sys.argv) > 1 else git("merge-base", "HEAD", "main").strip() or DEFAULT_REV
    with open(os.path.join(ROOT, "template.yaml")) as f:
        now = render(f.read())
    before = render(git("show", f"{rev}:template.yaml"))
    total = sum(len(g) for g in now.values())
    print(f"template-permissions: {len(now)} roles, {total} grants in template.yaml; "
          f"{len(before)} roles, {sum(len(g) for g in before.values())} grants at {rev}")
    differ = False
    for role in sorted(set(now) | set(before)):
        gained = now.get(role, set()) - before.get(role, set())
        lost = before.get(role, set()) - now.get(role, set())
        if role not in before:
            print(f"  new role {role}")
        if role not in now:
            print(f"  role {role} is gone")
        for label, items in (("+", gained), ("-", lost)):
            for conds, effect, action, resource, condition in sorted(items):
                differ = True
                when = f" if {conds}" if conds else ""
                cond = f" when {condition}" if condition else ""
                print(f"  {label} {role}: {effect} {action} on {resource}{cond}{when}")
        differ = differ or role not in before or role not in now
    print("template-permissions: " + ("DIFFERENT" if differ else "identical"))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
