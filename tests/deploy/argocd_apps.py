"""Expands gitops/argocd/applicationset.yaml into the Applications Argo CD would create.

    argocd_apps.py GITOPS_DIR CHART_DIR OUT_FILE

For each element of the list generator: its values file exists in the chart, its
namespace is a destination of the AppProject, the template's `{{.key}}` placeholders
(Go template syntax, goTemplate: true) are all filled, and the templatePatch's automated
sync applies when the element asks for it. Writes the Applications as YAML (for the CRD
check) and prints one line per Application; exit 1 on any failure.
"""
import copy
import pathlib
import re
import sys

import yaml

PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def fill(value, element, missing):
    if isinstance(value, str):
        def sub(m):
            if m.group(1) not in element:
                missing.add(m.group(1))
                return m.group(0)
            return str(element[m.group(1)])
        return PLACEHOLDER.sub(sub, value)
    if isinstance(value, list):
        return [fill(v, element, missing) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, element, missing) for k, v in value.items()}
    return value


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gitops, chart, out = map(pathlib.Path, argv)
    appset = yaml.safe_load((gitops / "applicationset.yaml").read_text())
    project = yaml.safe_load((gitops / "project.yaml").read_text())
    namespaces = {d["namespace"] for d in project["spec"]["destinations"]}
    failed, apps = 0, []
    for gen in appset["spec"]["generators"]:
        for element in gen["list"]["elements"]:
            missing = set()
            spec = fill(copy.deepcopy(appset["spec"]["template"]), element, missing)
            name = spec["metadata"]["name"]
            problems = [f"no value for {{{{.{k}}}}}" for k in sorted(missing)]
            for vf in spec["spec"]["source"]["helm"]["valueFiles"]:
                if not (chart / vf).is_file():
                    problems.append(f"values file {vf} is not in {chart}")
            if spec["spec"]["destination"]["namespace"] not in namespaces:
                problems.append(f"namespace {spec['spec']['destination']['namespace']} is not a destination of the project")
            if spec["spec"]["project"] != project["metadata"]["name"]:
                problems.append(f"project {spec['spec']['project']} is not {project['metadata']['name']}")
            if element.get("automated"):
                spec["spec"]["syncPolicy"]["automated"] = {"prune": True, "selfHeal": True}
            if problems:
                failed += 1
                for p in problems:
                    print(f"FAIL Application/{name}: {p}")
                continue
            apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                         "metadata": {**spec["metadata"], "namespace": appset["metadata"]["namespace"]},
                         "spec": spec["spec"]})
            sync = "automated" if element.get("automated") else "manual"
            print(f"ok   Application/{name}: {spec['spec']['source']['helm']['valueFiles']} -> "
                  f"{spec['spec']['destination']['namespace']}, {sync} sync")
    out.write_text(yaml.safe_dump_all(apps, sort_keys=False))
    return 1 if failed or not apps else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
