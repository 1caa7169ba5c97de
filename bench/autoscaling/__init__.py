"""The autoscaling benchmark: a discrete-event simulation of a TEI fleet, run against tei-operator's own policy
and the autoscalers a user would otherwise run. Entry point: `python -m bench.autoscaling`."""
