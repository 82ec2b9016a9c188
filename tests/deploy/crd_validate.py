"""Validates custom resources in rendered manifests against their CustomResourceDefinitions.

    crd_validate.py CRD_FILE_OR_DIR... -- MANIFEST...

Each CRD's openAPIV3Schema (per served version) validates every object of its group,
kind and version; an object of a CRD group with no matching CRD is an error. Objects of
other groups are left to kubernetes-validate. Prints one line per object; exit 1 on any
failure.
"""
import pathlib
import sys

import jsonschema
import yaml


class Loader(yaml.SafeLoader):
    """SafeLoader that reads YAML's `=` (value) tag, found in CRD enums, as a string."""


Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=Loader) if isinstance(d, dict)]


def main(argv):
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    split = argv.index("--")
    crd_paths, manifests = argv[:split], argv[split + 1:]
    schemas, groups = {}, set()
    for p in crd_paths:
        p = pathlib.Path(p)
        files = sorted(p.glob("*.yaml")) if p.is_dir() else [p]
        for f in files:
            for d in load_docs(f):
                if d.get("kind") != "CustomResourceDefinition":
                    continue
                spec = d["spec"]
                groups.add(spec["group"])
                for v in spec["versions"]:
                    schema = v.get("schema", {}).get("openAPIV3Schema")
                    if schema:
                        schemas[(spec["group"], spec["names"]["kind"], v["name"])] = schema
    failed = checked = 0
    for m in manifests:
        for d in load_docs(m):
            group, _, version = d.get("apiVersion", "").rpartition("/")
            if group not in groups:
                continue
            name = f'{d["kind"]}/{d.get("metadata", {}).get("name", "?")}'
            schema = schemas.get((group, d["kind"], version))
            checked += 1
            if schema is None:
                print(f"FAIL {m}: {name}: no CRD for {d['apiVersion']} {d['kind']}")
                failed += 1
                continue
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(d), key=lambda e: list(e.path))
            if errors:
                failed += 1
                for e in errors[:5]:
                    print(f"FAIL {m}: {name}: {'/'.join(map(str, e.path))}: {e.message}")
            else:
                print(f"ok   {name} ({d['apiVersion']})")
    print(f"{checked} custom resource(s) checked, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
