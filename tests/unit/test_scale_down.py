"""The scale-down memory (autoscaling/scale_down.py): a stationary noisy load does not flap, a load that changed
level still scales down within a bound. Scripted demand through the real `decide`, with replicas that take a model
load to become Ready (no cluster)."""

from __future__ import annotations

import math
import random

import pytest

from tei_operator.api.autoscaling import AutoscalingSpec
from tei_operator.autoscaling import scale_down
from tei_operator.autoscaling.policy import PolicyState, decide
from tei_operator.autoscaling.scale_down import LEVEL_SHIFT_SHARE, noise_floor
from tei_operator.autoscaling.signals import Signals

MBT = 65536
PEAK = 10_000.0  # tokens/s one replica serves (learned); the default targetUtilization 0.7 makes the goal 7,000
GOAL = 7_000.0
LOAD_SECONDS = 120.0
TICK = 15.0


def spec(**kw) -> AutoscalingSpec:
    base = {"enabled": True, "minReplicas": 1, "maxReplicas": 20, "targetQueueSize": 16}
    base.update(kw)
    return AutoscalingSpec.model_validate(base)


def signals(t: float, current: int, ready: int, demand: float) -> Signals:
    """A fleet whose `ready` replicas see `demand` tokens/s in all (arrivals = completions), `current - ready`
    still loading their model."""
    per = demand / ready
    return Signals(observed_at=t, current_replicas=current, ready_replicas=ready, queue_size_total=0.0,
                   starting_replicas=current - ready, batch_tokens_rate_sum=per * ready,
                   batch_rate_count=10.0 * ready, request_rate=10.0 * ready, success_rate=10.0 * ready,
                   load_seconds=LOAD_SECONDS)


def drive(demand_at, seconds: float, start: int, sp: AutoscalingSpec | None = None) -> list[tuple[float, int, int]]:
    """Run `decide` every TICK seconds over `demand_at(t)` (total tokens/s); a replica asked for becomes Ready
    LOAD_SECONDS later, a scale-down removes loading replicas first. Returns the actions (time, from, to)."""
    sp = sp or spec()
    state = PolicyState(peak_tokens_per_replica=PEAK)  # a fresh start: the first window is watched
    ready_at = [-1.0] * start  # when each replica is (or will be) Ready
    actions = []
    t = 0.0
    while t < seconds:
        ready = sum(1 for r in ready_at if r <= t)
        d, state = decide(signals(t, len(ready_at), ready, demand_at(t)), state, sp, MBT, now=t)
        want = d.desired_replicas
        if want > len(ready_at):
            ready_at += [t + LOAD_SECONDS] * (want - len(ready_at))
        elif want < len(ready_at):
            ready_at = sorted(ready_at)[:want]  # the loading ones (latest) go first
        was = actions[-1][2] if actions else start
        if want != was:
            actions.append((t, was, want))
        t += TICK
    return actions


def reversals(actions) -> int:
    """Changes of direction between consecutive actions (bench/autoscaling/run.py's count)."""
    dirs = [1 if b > a else -1 for _, a, b in actions]
    return sum(1 for x, y in zip(dirs, dirs[1:]) if x != y)


def up_down_up(actions) -> bool:
    """A scale-up, then a scale-down, then a scale-up again: the flap."""
    dirs = [1 if b > a else -1 for _, a, b in actions]
    went_up = came_down = False
    for d in dirs:
        if d > 0 and came_down:
            return True
        went_up = went_up or d > 0
        came_down = came_down or (d < 0 and went_up)
    return False


def removed_early(actions, demand_at) -> list[tuple[float, int, int]]:
    """Scale-downs within the scale-down memory (900 s) of the last scale-up while the load is still at its level
    (its last 300 s peaked at LEVEL_SHIFT_SHARE or more of the last 900 s's peak: sampled every 5 s)."""
    memory = scale_down.memory_seconds(300.0)
    out, last_up = [], None
    for t, a, b in actions:
        if b > a:
            last_up = t
            continue
        peak = max(demand_at(max(0.0, t - k)) for k in range(0, int(memory), 5))
        recent = max(demand_at(max(0.0, t - k)) for k in range(0, 300, 5))
        if last_up is not None and t - last_up < memory and recent >= LEVEL_SHIFT_SHARE * peak:
            out.append((t, a, b))
    return out


def noisy(seed: int, burst: bool, level: float = 4 * GOAL):
    """A stationary rate wandering around `level` every 30 s (lognormal AR(1), as the benchmark's noisy traces:
    bench/autoscaling/make_traces.py), read through a 60 s rate window; with `burst`, 1.6x of it for 5 minutes
    from 600 s (the test noisy trace's burst)."""
    rnd = random.Random(seed)
    x, steps = 0.0, []
    for _ in range(100):
        x = 0.7 * x + rnd.gauss(0.0, 0.12)
        steps.append(math.exp(x))

    def raw(t: float) -> float:
        return level * (1.6 if burst and 600.0 <= t < 900.0 else 1.0) * steps[int(t // 30)]

    return lambda t: sum(raw(max(0.0, t - k)) for k in range(0, 60, 5)) / 12  # the rate window's mean


SEEDS = range(1, 11)
RUN = 1500.0  # the benchmark's test noisy trace


@pytest.mark.parametrize("seed", SEEDS)
def test_a_stationary_noisy_load_never_goes_up_down_up(seed):
    # Growth headroom off: it is a forecast of the scale-up path (a rise read through the rate window can be
    # projected beyond the burst, and the excess is then given back); this isolates the scale-down path.
    sp = spec(growthHeadroom=False)
    for burst in (False, True):
        demand = noisy(seed, burst)
        actions = drive(demand, RUN, start=5, sp=sp)
        assert not up_down_up(actions), actions
        assert not removed_early(actions, demand), actions
        if burst:
            assert any(b > a for _, a, b in actions), actions  # the burst was seen (it asked for replicas)


@pytest.mark.parametrize("seed", SEEDS)
def test_replicas_added_on_a_noisy_load_stay_for_the_memory(seed):
    # The default spec (growth headroom on): whatever asked for them, replicas added while the load stays at its
    # level are neither cancelled while loading nor removed within the 900 s memory.
    for burst in (False, True):
        demand = noisy(seed, burst)
        actions = drive(demand, RUN, start=5)
        assert not removed_early(actions, demand), actions


def test_without_the_memory_the_same_loads_flap(monkeypatch):
    # The scenarios above are ones the stabilization window alone gets wrong: these tests can fail.
    monkeypatch.setattr(scale_down, "LEVEL_SHIFT_SHARE", math.inf)
    early = flaps = 0
    for seed in range(1, 6):
        for burst in (False, True):
            demand = noisy(seed, burst)
            actions = drive(demand, RUN, start=5)
            early += len(removed_early(actions, demand))
            flaps += up_down_up(actions)
    assert early >= 10 and flaps >= 3, (early, flaps)


def spike(t: float) -> float:
    """1.2 replicas' worth, and a 6x spike for 25 s at 480 s, read through the 60 s rate window (a minute-long hill
    to 3.7x that has left the window at 565 s)."""
    inside = max(0.0, min(t, 505.0) - max(t - 60.0, 480.0))
    return 1.2 * GOAL * (1.0 + 5.0 * inside / 60.0)


def step(t: float) -> float:
    """1.5 replicas' worth, 5 from 300 s to 1200 s (read through the rate window: down at 1260 s), then 1.5."""
    inside = max(0.0, min(t, 1200.0) - max(t - 60.0, 300.0))
    return GOAL * (1.5 + 3.5 * inside / 60.0)


def test_a_spike_still_scales_down_within_a_bound(monkeypatch):
    actions = drive(spike, 1200.0, start=2)
    ups = [a for a in actions if a[2] > a[1]]
    downs = [a for a in actions if a[2] < a[1]]
    assert ups and downs and actions[-1][2] == 2, actions
    # The spike fell to under LEVEL_SHIFT_SHARE of its peak: a level shift, so the memory does not apply. The
    # replicas still loading are cancelled once the spike has left the rate window (565 s) and the low load is
    # confirmed (CANCEL_CONFIRM_SECONDS), exactly as without the memory.
    assert downs[0][0] <= 565.0 + 3 * TICK, actions
    assert actions[-1][0] <= 565.0 + 300.0 + 4 * TICK, actions
    monkeypatch.setattr(scale_down, "LEVEL_SHIFT_SHARE", math.inf)
    assert drive(spike, 1200.0, start=2) == actions


def test_a_step_back_down_scales_down_as_before(monkeypatch):
    actions = drive(step, 2400.0, start=2)
    after = [a for a in actions if a[0] >= 1200.0]
    # 1.5 / 5 = 0.3 of the peak: a level shift, so the memory does not apply: down one stabilization window after
    # the rate window shows it, then by the step limit (periods of 60 s) to the 2 replicas 1.5 needs. (Before, the
    # memory held the 10 that growth headroom asked for at the step up, where the window alone gave 2 of them back
    # after 300 s: replicas the plateau did not need, the memory's cost.)
    assert after and after[0][2] < after[0][1] and after[0][0] <= 1260.0 + 300.0 + TICK, actions
    assert actions[-1][2] == 2 and actions[-1][0] <= 1260.0 + 300.0 + 5 * 60.0 + TICK, actions
    monkeypatch.setattr(scale_down, "LEVEL_SHIFT_SHARE", math.inf)
    without = drive(step, 2400.0, start=2)
    assert without[-1][2] == 2 and any(t < 1200.0 and b < a for t, a, b in without)


def test_noise_floor_remembers_the_peak_while_the_load_stays_at_its_level():
    history = tuple((float(t), 20_000.0) for t in range(0, 900, 15)) + ((900.0, 30_000.0),) + \
        tuple((float(t), 18_000.0) for t in range(915, 1500, 15))
    f = noise_floor(history, 1485.0, 300.0, 7_000.0, 300.0)
    assert f is not None and f.replicas == 5 and f.peak == 30_000.0 and f.peak_at == 900.0  # ceil(30,000 / 7,000)
    assert "peak demand of the last 900s" in f.note
    # 900 s later the peak has left the memory: the floor serves the highest demand since.
    assert noise_floor(history, 1815.0 - 0.0, 300.0, 7_000.0, 300.0) is None or \
        noise_floor(history + ((1815.0, 18_000.0),), 1815.0, 300.0, 7_000.0, 300.0).replicas == 3
    # A load below LEVEL_SHIFT_SHARE of the peak changed level: no floor.
    low = history[:61] + tuple((float(t), 0.9 * LEVEL_SHIFT_SHARE * 30_000.0) for t in range(915, 1500, 15))
    assert noise_floor(low, 1485.0, 300.0, 7_000.0, 300.0) is None
    # After a scale-up within the memory, the recommendations made since the demand was watched count too.
    recs = ((-100.0, 12), (1000.0, 8), (1485.0, 3))
    assert noise_floor(history, 1485.0, 300.0, 7_000.0, 300.0, recs, last_scale_up=1000.0).replicas == 8
    assert noise_floor(history, 1485.0, 300.0, 7_000.0, 300.0, recs).replicas == 5  # no scale-up: demand alone
    assert noise_floor(history, 1485.0, 300.0, 7_000.0, 300.0, recs, last_scale_up=500.0).replicas == 5  # too old
    # Nothing known: no floor.
    assert noise_floor(history, 1485.0, 300.0, None, 300.0) is None
    assert noise_floor((), 1485.0, 300.0, 7_000.0, 300.0) is None
