"""`python -m bench.scale` (make bench-scale): the operator at N = 100, 300 and 1,000 services on the local control
plane, against a raw client that applies the same children. Prints a table and writes docs/benchmarks/scale.md.

Each run starts a fresh control plane (tests/cluster: etcd, kube-apiserver, controller-manager, scheduler, kwok) with
enough simulated A100 nodes, a real Prometheus that discovers the operator's pods through the API server, and one
process (fakepods.py) that answers as an idle TEI at every pod IP. Then, in one run:
1. raw baseline: the N services' children, rendered by the operator's own render functions, applied once each by a
   plain client; the time until every Deployment is Ready, and what the control plane sent meanwhile;
2. the control plane's idle traffic for a while, with no operator (taken out of the operator's idle figures);
3. the operator (a real `tei-operator run` process) and N services applied: the time until every service is Ready,
   and the API requests by verb and resource from kube-apiserver's `apiserver_request_total` (scraped before and
   after), less the benchmark's own requests and less what the control plane sent for the same children in step 1;
4. an idle window (several resyncs and autoscaler ticks): requests per service per minute, less the control
   plane's idle rate of step 2; the operator's RSS and CPU seconds (/proc); the autoscaler's tick time (the
   operator's tei_operator_autoscaler_tick_duration_seconds) and Prometheus queries per tick (Prometheus's own
   prometheus_http_requests_total).
"""
