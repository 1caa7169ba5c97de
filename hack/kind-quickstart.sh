#!/usr/bin/env bash
# kind quickstart for users with Docker: a kind cluster, the operator image built and loaded into it, the chart
# installed, and the CPU example (BAAI/bge-small-en-v1.5 on TEI's CPU image) applied and queried.
#
# Needs: docker, kind, kubectl, helm on PATH, and internet access for the images and the model download.
# NOTE: written and reviewed on machines without a Docker engine; it has not been run there. Report problems.
#
# Usage: hack/kind-quickstart.sh [up|down]    (env: CLUSTER_NAME=tei-operator, IMAGE=tei-operator:dev)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CLUSTER_NAME="${CLUSTER_NAME:-tei-operator}"
IMAGE="${IMAGE:-tei-operator:dev}"
NAMESPACE=tei-system
DEMO_NS=default

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "kind-quickstart: $1 is not on PATH ($2)" >&2; exit 1; }; }

if [ "${1:-up}" = "down" ]; then
  kind delete cluster --name "$CLUSTER_NAME"
  exit 0
fi

need docker "https://docs.docker.com/get-docker/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
docker info >/dev/null 2>&1 || { echo "kind-quickstart: the Docker engine does not answer (is it running?)" >&2; exit 1; }

step "Creating kind cluster $CLUSTER_NAME"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  echo "    already exists; reusing it"
else
  kind create cluster --name "$CLUSTER_NAME" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER_NAME" >/dev/null

step "Building the operator image $IMAGE"
docker build -t "$IMAGE" .

step "Loading $IMAGE into the kind nodes"
kind load docker-image "$IMAGE" --name "$CLUSTER_NAME"

step "Installing the chart into $NAMESPACE"
helm upgrade --install tei-operator charts/tei-operator --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set operator.logFormat=plain --wait --timeout 5m
helm test tei-operator --namespace "$NAMESPACE" --logs

step "Applying the CPU example (examples/embedding-cpu.yaml)"
kubectl apply -n "$DEMO_NS" -f examples/embedding-cpu.yaml
echo "    TEI downloads the model on first start; this takes a few minutes"
kubectl wait -n "$DEMO_NS" --for=condition=Ready embeddingservice/bge-small-cpu --timeout=15m
kubectl get tei -n "$DEMO_NS"

step "Embedding a sentence through the Service"
kubectl -n "$DEMO_NS" port-forward service/bge-small-cpu 8080:80 >/dev/null 2>&1 &
pf=$!
trap 'kill $pf 2>/dev/null || true' EXIT
sleep 3
curl -fsS http://127.0.0.1:8080/embed -H 'Content-Type: application/json' \
  -d '{"inputs": "What is Deep Learning?"}' | cut -c1-120
echo " ..."

cat <<EOF

The operator runs in kind cluster $CLUSTER_NAME. Next:
    kubectl get tei -A
    kubectl describe embeddingservice bge-small-cpu
    kubectl logs -n $NAMESPACE deployment/tei-operator
Remove it all with: hack/kind-quickstart.sh down
EOF
