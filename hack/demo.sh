#!/usr/bin/env bash
# `make demo`: tei-operator end to end on this machine, no Docker and no GPU needed.
#   1. builds the control-plane tools (cached after the first run; progress is printed while Go builds)
#   2. starts the local control plane with simulated GPU nodes (tests/cluster: kwok nodes with nvidia.com/gpu)
#   3. installs the CRDs from crds/
#   4. runs `tei-operator run` in the background against it
#   5. applies the autoscaling examples (examples/*-autoscaling*.yaml)
#   6. starts one TEI emulator per Running pod, standing in for TEI (tests/cluster/emulated_pods.py)
#   7. drives the emulators with open-loop load and shows the service scaling up
#   8. applies the two-stage retrieval example (examples/two-stage-retrieval.yaml: an embedder and a reranker) in
#      namespace search and runs examples/retrieval_client.py against its emulated pods (top-100 rerank)
# `make demo-down` (hack/demo.sh down) stops everything this script started.
#
# Must run as root: each TEI emulator binds port 80 on its pod's IP, as TEI does in a real pod (a port below 1024),
# and the cluster runs in a network namespace of its own (`ip netns`, named after DEMO_DIR) where pod IPs come from
# 198.18.0.0/15 on lo, so Services have valid endpoints as in a real cluster and nothing leaves the machine. Every
# command below that talks to the cluster runs inside it (`python -m tests.cluster exec`). Without iproute2 the
# cluster falls back to loopback pod IPs (127.N.x.y) in the host's namespace, and says so.
#
# Environment: DEMO_DIR (default ~/.cache/tei-operator/demo), DEMO_LOAD_SECONDS (default 180),
# DEMO_RATE (load generator rate, default "20,400@30": 20 req/s, then 400 req/s after 30 s),
# DEMO_TOKENS_PER_SECOND (modelled GPU throughput per emulated pod, default 20000).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="$ROOT/.venv/bin"
CACHE="${TEI_OPERATOR_CACHE:-$HOME/.cache/tei-operator}"
DEMO_DIR="${DEMO_DIR:-$CACHE/demo}"
CLUSTER_DIR="$DEMO_DIR/cluster"
LOAD_SECONDS="${DEMO_LOAD_SECONDS:-180}"
RATE="${DEMO_RATE:-20,400@30}"
STEPS=8
START=$(date +%s)

step() { printf '\n\033[1m==> [%s/%s +%ss] %s\033[0m\n' "$1" "$STEPS" "$(( $(date +%s) - START ))" "$2"; }
info() { printf '    %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# Starts a background process, remembering its pid in $DEMO_DIR/NAME.pid and its output in NAME.log.
start_bg() {
  local name=$1; shift
  "$@" >"$DEMO_DIR/$name.log" 2>&1 &
  echo $! >"$DEMO_DIR/$name.pid"
  info "started $name (pid $!, log $DEMO_DIR/$name.log)"
}

stop_bg() {
  local name=$1 pidfile="$DEMO_DIR/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    info "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

down() {
  echo "demo: stopping what \`make demo\` started in $DEMO_DIR"
  for name in load emulators operator; do stop_bg "$name"; done
  "$BIN/python" -m tests.cluster down --dir "$CLUSTER_DIR" || true
}

if [ "${1:-up}" = "down" ]; then
  down
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "must run as root: the TEI emulators bind port 80 on the simulated pods' IPs (ports below 1024 need root), and the cluster gets a network namespace of its own. Run it as root."
[ -x "$BIN/tei-operator" ] || die "run \`make venv\` first (or use \`make demo\`, which does)"
mkdir -p "$DEMO_DIR"
for name in load emulators operator; do stop_bg "$name"; done   # a previous demo's leftovers

step 1 "Building the control-plane tools (first run: several minutes of Go builds; cached afterwards)"
bash hack/build-tools.sh

step 2 "Starting the local control plane with simulated GPU nodes"
eval "$("$BIN/python" -m tests.cluster up --no-build --dir "$CLUSTER_DIR")"
export KUBECONFIG
KUBECTL="$CACHE/bin/kubectl-$(. hack/versions.env; echo "$KUBERNETES_VERSION")"
# "${IN_CLUSTER[@]}" CMD...: run CMD in the cluster's network namespace (KUBECONFIG set; in the loopback fallback
# just CMD). It execs CMD, so a background job's pid is CMD's own.
IN_CLUSTER=("$BIN/python" -m tests.cluster exec --dir "$CLUSTER_DIR" --)
in_cluster() { "${IN_CLUSTER[@]}" "$@"; }
kubectl() { in_cluster "$KUBECTL" "$@"; }
info "KUBECONFIG=$KUBECONFIG"
NETNS="$("$BIN/python" -c 'import json,os,sys; print(os.path.basename(json.load(open(sys.argv[1])).get("netns", "")))' "$CLUSTER_DIR/state.json")"
if [ -n "$NETNS" ]; then
  info "network namespace $NETNS: pod IPs $("$BIN/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["pod_cidr"])' "$CLUSTER_DIR/state.json") on lo, valid Endpoints"
else
  info "no network namespace (see the line above): loopback pod IPs, Services without endpoints"
fi
kubectl get nodes -L nvidia.com/gpu.product -L nvidia.com/gpu.count | sed 's/^/    /'

step 3 "Installing the CRDs (crds/)"
kubectl apply --server-side -f crds/ | sed 's/^/    /'
kubectl wait --for=condition=Established --timeout=60s crd/embeddingservices.tei-operator.io \
  crd/rerankerservices.tei-operator.io | sed 's/^/    /'

step 4 "Starting the operator (tei-operator run)"
HEALTH_PORT="$("$BIN/python" -c 'from tests.cluster import free_port; print(free_port())')"
# The built-in scraper reads each pod's /metrics through the API server's pod proxy, as an operator running outside
# the cluster does (scrape_via=auto picks it); in the loopback fallback the API server refuses to proxy to
# loopback addresses, so it reads the pods directly (scrape_via=podip).
METRICS_PORT="$("$BIN/python" -c 'from tests.cluster import free_port; print(free_port())')"
SCRAPE_VIA=proxy
[ -n "$NETNS" ] || SCRAPE_VIA=podip
TEI_OPERATOR_HEALTH_PORT="$HEALTH_PORT" TEI_OPERATOR_METRICS_PORT="$METRICS_PORT" TEI_OPERATOR_AUTOSCALER_TICK_SECONDS="${TEI_OPERATOR_AUTOSCALER_TICK_SECONDS:-5}" \
  TEI_OPERATOR_SCRAPE_VIA="$SCRAPE_VIA" TEI_OPERATOR_LOG_FORMAT=plain \
  start_bg operator "${IN_CLUSTER[@]}" "$BIN/tei-operator" run
for _ in $(seq 1 60); do
  in_cluster curl -fsS "http://127.0.0.1:$HEALTH_PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$(cat "$DEMO_DIR/operator.pid")" 2>/dev/null || { tail -20 "$DEMO_DIR/operator.log"; die "the operator exited"; }
  sleep 1
done
info "the operator is healthy on http://127.0.0.1:$HEALTH_PORT/healthz, its metrics are on http://127.0.0.1:$METRICS_PORT/metrics"

step 5 "Applying the autoscaling examples"
shopt -s nullglob
examples=(examples/*-autoscaling*.yaml)
[ ${#examples[@]} -gt 0 ] || die "no examples/*-autoscaling*.yaml found"
for f in "${examples[@]}"; do kubectl apply -n default -f "$f" | sed 's/^/    /'; done
kubectl get tei -n default | sed 's/^/    /'

step 6 "Starting one TEI emulator per Running pod (tests/cluster/emulated_pods.py)"
# kwok gives pods IPs from the cluster's pod CIDR and runs nothing; the runner starts `tei-operator emulator` on each
# Running pod's IP and port 80 (the TEI container port, hence root) and writes the listening ones to a Prometheus
# file_sd file, which the load step reads.
TARGETS="$DEMO_DIR/targets.json"
rm -f "$TARGETS"
start_bg emulators "${IN_CLUSTER[@]}" "$BIN/python" -m tests.cluster.emulated_pods --kubeconfig "$KUBECONFIG" \
  --prometheus-targets "$TARGETS" --tokens-per-second "${DEMO_TOKENS_PER_SECOND:-20000}" \
  --log-dir "$DEMO_DIR/emulators"
for _ in $(seq 1 60); do [ -s "$TARGETS" ] && break; sleep 1; done
[ -s "$TARGETS" ] || { tail -20 "$DEMO_DIR/emulators.log"; die "no emulator came up within 60 s"; }
info "emulators listening: $("$BIN/python" -c 'import json,sys; print(sum(len(g["targets"]) for g in json.load(open(sys.argv[1]))))' "$TARGETS")"

step 7 "Sending load for ${LOAD_SECONDS}s (rate $RATE req/s) and watching the services scale"
# Open-loop load (tei_operator.emulator.loadgen) spread over whatever pods are listening at each moment: new
# replicas take load as soon as their emulator is up.
cat >"$DEMO_DIR/load.py" <<'PY'
import asyncio, json, sys
from tei_operator.emulator.loadgen import parse_rate_schedule, run_load

targets, rate, duration = sys.argv[1], parse_rate_schedule(sys.argv[2]), float(sys.argv[3])

def urls():
    try:
        return [f"http://{t}" for group in json.load(open(targets)) for t in group["targets"]]
    except (OSError, ValueError):
        return []

summary = asyncio.run(run_load(urls, rate, duration))
print(summary)
PY
start_bg load "${IN_CLUSTER[@]}" "$BIN/python" "$DEMO_DIR/load.py" "$TARGETS" "$RATE" "$LOAD_SECONDS"
end=$(( $(date +%s) + LOAD_SECONDS + 30 ))
while [ "$(date +%s)" -lt "$end" ]; do
  printf '\n    --- +%ss\n' "$(( $(date +%s) - START ))"
  kubectl get tei -n default | sed 's/^/    /'
  grep -E "Scaled|Scaling" "$DEMO_DIR/operator.log" | tail -3 | sed 's/^/    /' || true
  sleep 10
done

step 8 "Two-stage retrieval: examples/two-stage-retrieval.yaml and examples/retrieval_client.py"
# After the load (which sends /embed to every listening pod, and a reranker answers /embed with 424).
kubectl create namespace search --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n search -f examples/two-stage-retrieval.yaml | sed 's/^/    /'
kubectl wait -n search --for=condition=Ready embsvc/retrieval-embed rrsvc/retrieval-rerank --timeout=180s \
  | sed 's/^/    /'
url_of() {  # the URL of a listening emulated pod of service $1 in namespace search, from the targets file
  "$BIN/python" - "$TARGETS" "$1" <<'PY'
import json, sys
groups = [g for g in json.load(open(sys.argv[1])) if g["labels"].get("namespace") == "search"
          and g["labels"].get("service") == sys.argv[2]]
print(f"http://{groups[0]['targets'][0]}" if groups else "")
PY
}
for _ in $(seq 1 60); do
  EMBED_URL="$(url_of retrieval-embed)"; RERANK_URL="$(url_of retrieval-rerank)"
  [ -n "$EMBED_URL" ] && [ -n "$RERANK_URL" ] && break
  sleep 1
done
[ -n "$EMBED_URL" ] && [ -n "$RERANK_URL" ] || die "the two-stage services' emulators did not come up within 60 s"
info "python examples/retrieval_client.py --embed-url $EMBED_URL --rerank-url $RERANK_URL --top-k 100 --top-n 5 ..."
"$BIN/python" examples/retrieval_client.py --embed-url "$EMBED_URL" --rerank-url "$RERANK_URL" \
  --query "what does TEI answer when it is overloaded?" --top-k 100 --top-n 5 | sed 's/^/    /'
kubectl get tei -n search | sed 's/^/    /'

cat <<EOF

Done. The cluster and the operator keep running${NETNS:+ in network namespace $NETNS}:
    .venv/bin/python -m tests.cluster exec --dir $CLUSTER_DIR -- kubectl get tei -A
    .venv/bin/python -m tests.cluster exec --dir $CLUSTER_DIR -- kubectl describe embeddingservice -n default
    .venv/bin/python -m tests.cluster exec --dir $CLUSTER_DIR -- bash     # a shell in it (KUBECONFIG set)
    tail -f $DEMO_DIR/operator.log
Stop everything with: make demo-down
EOF
