"""Builds `sam deploy`'s parameter overrides for scripts/deploy.sh.

Reads template.yaml's parameters, the non-secret `Name=value` lines of the
parameters file, and each secret (`NoEcho`) parameter from the environment
variable of the same name or the file named by `<Name>_FILE`. Writes the
overrides as a YAML mapping (JSON syntax: every value a quoted string, so
commas, spaces, quotes and backslashes pass through unchanged) to the path
given, and prints them with secrets as `***`. Exits 2 with a reason on any
mistake, before anything is built or deployed.

Usage: deploy_params.py TEMPLATE PARAMS OUT
"""

import json
import os
import sys

import yaml


class _Loader(yaml.SafeLoader):
    pass


# CloudFormation's short forms (!Ref, !Sub, ...) do not matter here.
_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def fail(reason):
    print(f"deploy: {reason}", file=sys.stderr)
    sys.exit(2)


def declared(template_path):
    with open(template_path) as f:
        template = yaml.load(f, Loader=_Loader)
    return {
        name: (bool(spec.get("NoEcho")), "Default" not in spec)
        for name, spec in template["Parameters"].items()
    }


def plain_values(params_path, parameters):
    values = {}
    try:
        lines = open(params_path).read().splitlines()
    except OSError as err:
        fail(f"cannot read the parameters file {params_path}: {err.strerror}")
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep:
            fail(f"{params_path}:{number}: not Name=value")
        if name not in parameters:
            fail(f"{params_path}:{number}: {name} is not a parameter of template.yaml")
        if parameters[name][0]:
            fail(f"{params_path}:{number}: {name} is a secret: pass it in the environment, not the file")
        if value:
            values[name] = value
    return values


def secret_values(parameters):
    values, missing = {}, []
    for name, (secret, required) in sorted(parameters.items()):
        if not secret:
            continue
        value = os.environ.get(name, "")
        path = os.environ.get(f"{name}_FILE", "")
        if not value and path:
            try:
                value = open(path).read().rstrip("\r\n")
            except OSError as err:
                fail(f"{name}_FILE={path}: {err.strerror}")
        if value:
            values[name] = value
        elif required:
            missing.append(name)
    if missing:
        fail(
            "required secrets not given: "
            + ", ".join(missing)
            + " (set each in the environment, or <Name>_FILE to a file holding it)"
        )
    return values


def main():
    if len(sys.argv) != 4:
        fail("usage: deploy_params.py TEMPLATE PARAMS OUT")
    template_path, params_path, out_path = sys.argv[1:]
    parameters = declared(template_path)
    plain = plain_values(params_path, parameters)
    secrets = secret_values(parameters)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({**plain, **secrets}, out, indent=1)
    for name, value in sorted(plain.items()):
        print(f"  {name}={value}")
    for name in sorted(secrets):
        print(f"  {name}=***")


if __name__ == "__main__":
    main()
