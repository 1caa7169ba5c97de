# tei-operator: common tasks. `make help` lists them.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= $(HOME)/.cache/tei-operator

.PHONY: help venv tools test test-unit test-fast test-integration test-e2e crds docs demo demo-down cluster-up \
        cluster-down cluster-exec \
        bench-autoscaling bench-failover bench-first-scale-up bench-scale test-faults install

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

$(BIN)/tei-operator: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@touch $@

venv: $(BIN)/tei-operator ## create .venv with the operator and its test dependencies

tools: ## build etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok, helm (cached in ~/.cache/tei-operator)
	bash hack/build-tools.sh

# As root, pytest moves itself into a private network namespace where simulated pods get 198.18.0.0/15 addresses
# (tests/cluster/netns.py); otherwise it falls back to loopback pod IPs and says so in its header ("pod network:").
test: venv tools ## run every test: unit, control plane, integration, e2e (needs `prometheus` on PATH for e2e)
	$(BIN)/pytest -ra

test-unit: venv ## the fast feedback loop: unit tests not marked slow, no cluster (`make test` runs the slow ones too)
	$(BIN)/pytest -ra -m "not slow" tests/unit $(PYTEST_ARGS)

test-fast: venv tools ## every test but those marked slow (each > ~10 s)
	$(BIN)/pytest -ra -m "not slow" $(PYTEST_ARGS)

test-integration: venv tools ## run the tests that need the local control plane
	$(BIN)/pytest -ra tests/chart tests/harness tests/integration $(PYTEST_ARGS)

test-e2e: venv tools ## run the closed-loop autoscaling tests
	$(BIN)/pytest -ra tests/e2e $(PYTEST_ARGS)

crds: venv ## regenerate crds/, the chart's CRD templates and docs/api-reference.md from the pydantic models
	bash hack/generate.sh

cluster-up: venv tools ## start the local control plane with simulated GPU nodes in the background
	$(BIN)/python -m tests.cluster up

cluster-down: venv ## stop the local control plane
	$(BIN)/python -m tests.cluster down

demo: venv tools ## try it without a cluster: local control plane, operator, examples, emulated TEI under load
	bash hack/demo.sh

demo-down: venv ## stop what `make demo` started
	bash hack/demo.sh down

bench-autoscaling: venv ## compare the autoscaling policy with HPA/KEDA/KPA/static baselines at equal SLO; writes docs/benchmarks/autoscaling.md
	nice -n 10 $(BIN)/python -m bench.autoscaling

bench-first-scale-up: venv tools ## time from a load step in the pods' metrics to the scale-up, 5 e2e runs; writes docs/benchmarks/first-scale-up.md
	$(BIN)/python -m bench.first_scale_up

bench-failover: venv tools ## SIGKILL/SIGTERM the operator's leader beside a standby; writes docs/benchmarks/failover.md
	$(BIN)/python -m bench.failover

bench-scale: venv tools ## the operator at 100, 300 and 1,000 services vs a raw client: time to Ready, API requests, idle cost; writes docs/benchmarks/scale.md (root: private network namespace, port 80)
	nice -n 10 $(BIN)/python -m bench.scale $(BENCH_ARGS)

cluster-exec: venv ## run CMD in the local cluster's network namespace: make cluster-exec CMD='kubectl get pods -A'
	$(BIN)/python -m tests.cluster exec -- $(CMD)

test-faults: venv tools ## inject faults (operator/leader kills, API server and etcd restarts, Prometheus outage, node loss, crash loop, RBAC) on the local control plane; writes docs/reliability.md
	nice -n 10 $(BIN)/python -m tests.faults

install: ## install the operator into the current kubectl context with Helm
	helm upgrade --install tei-operator charts/tei-operator -n tei-system --create-namespace
