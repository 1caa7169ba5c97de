"""bench/failover.py's table: one row per round and the medians (the measuring needs the control plane and is run
by `python -m bench.failover`; tests/integration/test_leader_election.py checks the same bounds once)."""

from __future__ import annotations

from bench.failover import Round, median_row, table


def test_table_has_a_row_per_round_and_the_medians():
    rounds = [Round(40, 0, 9.0, 10.5, 0.8, 2.0), Round(44, 0, 8.2, 9.1, 1.1, 2.6), Round(41, 1, 9.9, 12.0, 0.9, 1.9)]
    med = median_row(rounds)
    assert (med.leader_writes, med.standby_writes, med.kill_to_lease, med.kill_to_write) == (41, 0, 9.0, 10.5)
    lines = table(rounds).splitlines()
    assert len(lines) == 2 + 3 + 1
    assert lines[-1] == "| **median** | 41 | 0 | 9.0 | 10.5 | 0.9 | 2.0 |"
    assert lines[3] == "| 2 | 44 | 0 | 8.2 | 9.1 | 1.1 | 2.6 |"


def test_one_round_has_no_median_row():
    assert "median" not in table([Round(1, 0, 1, 2, 3, 4)])
