#!/usr/bin/env bash
# Validates what deploys genq without running it: the Kubernetes manifests against the Kubernetes
# API schemas (kubernetes-validate, from PyPI; strict: unknown fields are errors), the KEDA
# resources against the schemas of KEDA's CRDs (npm @kubernetes-models/keda), and compose.yaml
# with Debian's docker-compose (`config`, which needs no Docker engine), with and without the gpu
# profile. `scripts/test.sh` (so CI) runs it. Tools go to .genq/, never into git.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBERNETES_VERSION=1.33.0
KUBERNETES_VALIDATE_VERSION=1.37.0
KEDA_MODELS_VERSION=2.0.0
JS_YAML_VERSION=4.1.0

cd "$GENQ_ROOT"
command -v python3 >/dev/null || apt_install python3 python3-venv
command -v node >/dev/null || apt_install nodejs npm
command -v docker-compose >/dev/null || apt_install docker-compose

venv=.genq/deploy-venv
if ! "$venv/bin/kubernetes-validate" --version 2>/dev/null | grep -qx "$KUBERNETES_VALIDATE_VERSION"; then
    say "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
node_dir=.genq/deploy-node
if [ ! -d "$node_dir/node_modules/@kubernetes-models/keda" ]; then
    say "installing @kubernetes-models/keda $KEDA_MODELS_VERSION into $node_dir"
    mkdir -p "$node_dir"
    npm install --prefix "$node_dir" --no-audit --no-fund --silent \
        "@kubernetes-models/keda@$KEDA_MODELS_VERSION" "js-yaml@$JS_YAML_VERSION"
fi

manifests=(deploy/kubernetes/*.yaml)
builtin=()
for file in "${manifests[@]}"; do
    case "$file" in
        */kustomization.yaml | */keda-*.yaml) ;;
        *) builtin+=("$file") ;;
    esac
done
say "Kubernetes $KUBERNETES_VERSION schemas (strict): ${builtin[*]}"
"$venv/bin/kubernetes-validate" --strict --kubernetes-version "$KUBERNETES_VERSION" "${builtin[@]}"

say "KEDA CRD schemas: deploy/kubernetes/keda-*.yaml"
# ESM resolves packages from the script's own directory.
cp deploy/validate/keda.mjs "$node_dir/keda.mjs"
node "$node_dir/keda.mjs" deploy/kubernetes/keda-*.yaml

say "kustomization lists every manifest"
for file in "${manifests[@]}"; do
    name=$(basename "$file")
    [ "$name" = kustomization.yaml ] && continue
    grep -q "^ *#\? *- $name" deploy/kubernetes/kustomization.yaml || {
        warn "deploy/kubernetes/kustomization.yaml does not list $name"
        exit 1
    }
done

say "compose.yaml (docker-compose config), default and gpu profiles"
docker-compose -f compose.yaml config --quiet
docker-compose -f compose.yaml --profile gpu config --quiet
say "deployment files are valid"
