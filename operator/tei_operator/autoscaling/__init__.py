"""The autoscaler: signals from TEI's metrics, the pure scaling policy, and (loop.py) the loop that applies it."""

from .policy import Decision, PolicyState, decide
from .signals import Signals

__all__ = ["Decision", "PolicyState", "Signals", "decide"]
