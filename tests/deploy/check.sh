#!/usr/bin/env bash
# Static checks of what the repo deploys, all offline:
#   - helm lint and helm template of helm/guardian with every values file;
#   - the rendered manifests against the Kubernetes schemas (kubernetes-validate --strict),
#     and their custom resources (Prometheus Operator, Chaos Mesh) against the CRDs of
#     those projects (fetched from the Go module proxy at pinned versions);
#   - the values schema refuses unsafe values (each case below must fail to render);
#   - the Argo CD manifests (gitops/argocd) and the Applications their ApplicationSet
#     generates against Argo CD's CRDs (Go module proxy, pinned), each environment's
#     values file present; the GitHub Actions workflow with actionlint;
#   - checkov on the rendered manifests, the Dockerfile and terraform/ (exceptions are
#     inline #checkov:skip comments with their reasons, or listed in helm/checkov.yaml);
#   - terraform fmt -check; terraform validate needs provider plugins from a registry this
#     machine cannot reach, so it is not run (see terraform/README.md).
#
#   tests/deploy/check.sh          (tools come from `tests/stack/stack.sh install`)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TOOLS=${GUARDIAN_TOOLS:-$HOME/.cache/phoenix-guardian/tools}
HELM=${GUARDIAN_HELM:-$TOOLS/helm-3.22.0/bin/helm}
VALIDATORS=$TOOLS/validators/bin
KUBE_VERSION=1.33.0
CHART=$REPO/helm/guardian
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# No CLI configuration file here: an empty one instead of a warning on every run.
if [ ! -f "${TF_CLI_CONFIG_FILE:-$HOME/.terraformrc}" ]; then export TF_CLI_CONFIG_FILE=$OUT/terraformrc; : >"$TF_CLI_CONFIG_FILE"; fi
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

# CustomResourceDefinitions of the operators the chart targets, from their Go modules.
CHAOS_MESH_MODULE=github.com/chaos-mesh/chaos-mesh@v0.9.1-0.20260902003049-47411975a8cb
PROM_OPERATOR_MODULE=github.com/prometheus-operator/prometheus-operator@v0.85.0
ARGOCD_MODULE=github.com/argoproj/argo-cd/v3@v3.5.8
ACTIONLINT=${GUARDIAN_ACTIONLINT:-$TOOLS/actionlint-1.7.12/bin/actionlint}

say() { echo "deploy-check: $*"; }
die() { echo "deploy-check: FAILED: $*" >&2; exit 1; }
[ -x "$HELM" ] || die "helm not found at $HELM (run tests/stack/stack.sh install)"
[ -x "$VALIDATORS/checkov" ] || die "checkov not found in $VALIDATORS (run tests/stack/stack.sh install)"
command -v terraform >/dev/null || die "terraform not found (run tests/stack/stack.sh install)"
[ -x "$ACTIONLINT" ] || die "actionlint not found at $ACTIONLINT (run tests/stack/stack.sh install)"
module_dir() { # the module's folder in the Go module cache, downloaded on first use
  go mod download -json "$1" 2>/dev/null | "$VALIDATORS/python" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' \
    || die "go mod download $1 failed"
}
CRDS=("$(module_dir "$CHAOS_MESH_MODULE")/manifests/crd.yaml" "$(module_dir "$PROM_OPERATOR_MODULE")/example/prometheus-operator-crd")

# helm warns that files/slo-rules.yaml is a link to services/slo/prometheus/rules.yaml
# (one source for the rules promtool tests and the PrometheusRule): expected, filtered.
helm_() { "$HELM" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

values_files=("$CHART/values.yaml")
for f in "$CHART"/values-*.yaml; do values_files+=("$f"); done
for f in "${values_files[@]}"; do
  name=$(basename "$f" .yaml)
  helm_ lint --strict "$CHART" -f "$f" --kube-version "$KUBE_VERSION" >"$OUT/lint-$name.log" \
    || { cat "$OUT/lint-$name.log"; die "helm lint with $name"; }
  mkdir -p "$OUT/rendered"
  helm_ template guardian "$CHART" -n guardian -f "$f" --kube-version "$KUBE_VERSION" >"$OUT/rendered/$name.yaml" \
    || die "helm template with $name"
  kinds=$(grep -c '^kind:' "$OUT/rendered/$name.yaml" || true)
  [ "$kinds" -ge 5 ] || die "$name rendered only $kinds objects"
  "$VALIDATORS/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION" "$OUT/rendered/$name.yaml" >"$OUT/kv-$name.log" 2>&1 || true
  # Custom resources have no schema there: the CRDs check them below. Anything else that
  # is not a pass fails.
  if grep -v -E "passed for resource|Couldn't find schema for kind [A-Za-z]+ with api version (monitoring.coreos.com|chaos-mesh.org)/" "$OUT/kv-$name.log" | grep -q .; then
    cat "$OUT/kv-$name.log"; die "Kubernetes schema validation of $name"
  fi
  "$VALIDATORS/python" "$REPO/tests/deploy/crd_validate.py" "${CRDS[@]}" -- "$OUT/rendered/$name.yaml" >"$OUT/crd-$name.log" \
    || { cat "$OUT/crd-$name.log"; die "custom resources of $name against their CRDs"; }
  say "$name: lint ok, $kinds objects, Kubernetes $KUBE_VERSION schemas ok, $(tail -n 1 "$OUT/crd-$name.log")"
done

# GitOps: the project and the ApplicationSet, then the Applications it generates, against
# Argo CD's CRDs.
ARGOCD_CRDS=$(module_dir "$ARGOCD_MODULE")/manifests/crds
"$VALIDATORS/python" "$REPO/tests/deploy/argocd_apps.py" "$REPO/gitops/argocd" "$CHART" "$OUT/argocd-apps.yaml" \
  >"$OUT/argocd.log" || { cat "$OUT/argocd.log"; die "the ApplicationSet's Applications"; }
"$VALIDATORS/python" "$REPO/tests/deploy/crd_validate.py" "$ARGOCD_CRDS" -- "$REPO"/gitops/argocd/*.yaml "$OUT/argocd-apps.yaml" \
  >"$OUT/argocd-crd.log" || { cat "$OUT/argocd-crd.log"; die "the Argo CD manifests against their CRDs"; }
say "argocd: $(grep -c '^ok' "$OUT/argocd.log") Applications generated, $(tail -n 1 "$OUT/argocd-crd.log")"
"$ACTIONLINT" "$REPO"/.github/workflows/*.yml || die "actionlint on .github/workflows"
say "actionlint: workflows clean"

# The values schema must refuse what would weaken the pods.
refuse() {
  local why=$1; shift
  if helm_ template guardian "$CHART" --kube-version "$KUBE_VERSION" "$@" >/dev/null 2>"$OUT/refused.log"; then
    die "the chart accepted $why ($*)"
  fi
  grep -q "values don't meet the specifications" "$OUT/refused.log" || { cat "$OUT/refused.log"; die "$why: refused for another reason"; }
  say "refused as it should: $why"
}
refuse "a writable root filesystem" --set securityContext.readOnlyRootFilesystem=false
refuse "privilege escalation" --set securityContext.allowPrivilegeEscalation=true
refuse "running as root" --set podSecurityContext.runAsNonRoot=false
refuse "a misspelt Kafka security protocol" --set kafka.securityProtocol=sasl
refuse "a Kafka consumer without its own principal" --set services.kpi.kafkaSecret=null
refuse "an unknown service setting" --set services.kpi.hostNetwork=true

checkov_() {
  "$VALIDATORS/checkov" --skip-download --compact --quiet "$@" >"$OUT/checkov.log" 2>&1 || {
    cat "$OUT/checkov.log"; return 1; }
  grep -E 'Passed checks' "$OUT/checkov.log" | head -n 1
}
checkov_ -d "$OUT/rendered" --framework kubernetes --config-file "$REPO/helm/checkov.yaml" || die "checkov on the rendered chart"
say "checkov: rendered manifests clean"
checkov_ -f "$REPO/Dockerfile" --framework dockerfile || die "checkov on the Dockerfile"
say "checkov: Dockerfile clean"

terraform fmt -check -recursive "$REPO/terraform" >/dev/null || die "terraform fmt -check (run: terraform fmt -recursive terraform)"
say "terraform fmt: clean"
checkov_ -d "$REPO/terraform" --framework terraform || die "checkov on terraform/"
say "checkov: terraform clean (exceptions: $(grep -rc --include='*.tf' 'checkov:skip' "$REPO/terraform" | awk -F: '{s+=$2} END {print s}') inline, each with its reason)"
say "all deployment checks passed"
