"""The simulator's compiled event loop: every replica's TEI router, every request, in simulated time.

This is `tei_operator.emulator.batching.ReplicaModel` (the batching model the emulator shares) written on arrays
for numba, for a whole fleet at once. The rules are the same, line for line:

- `_pump` is ReplicaModel._pump: the backend takes the parked batch when idle; the awake batching task forms the
  next batch whenever the slot is free (an empty batch puts it back to sleep); a notification wakes it.
- `_form` is batching.take_batch without abandoned entries (simulated clients never give up): FIFO, up to
  max_batch_tokens and max_batch_requests, the first entry that does not fit ends the batch; every formed batch,
  empty ones included, is observed and resets the queue gauge to what is left.
- `_arrive` is ReplicaModel.arrive: te_request_count, then all permits or a 429, then +1 gauge per input.
- `_finish` is ReplicaModel.finish: each input gives its permit back; a request is answered when its last input is.

tests/unit/test_simulator_kernel.py runs both on random input and compares every batch, gauge value and counter.

State lives in arrays owned by `simulator.Simulator`, so a run can stop at any time (a scrape, a policy tick) and go
on. A replica's queue is a ring buffer: the running batch, the parked batch and the queue are consecutive ranges
[RUN_LO, PARK_LO), [PARK_LO, QUEUE_LO), [QUEUE_LO, TAIL) of ever-increasing positions (position & mask = slot);
permits in use = TAIL - RUN_LO, which never exceeds max_concurrent_requests <= the ring's size.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ---- per-pod integer state: ps[pod, ...] ----
RUN_LO, PARK_LO, QUEUE_LO, TAIL, PHASE, NOTIFIED, AWAKE, PARK_TOK, PARK_SQ, INFLIGHT, QUEUED_EVER = range(11)
N_PS = 11
# ---- per-pod float state: pf[pod, ...] ----
RUN_START, RUN_END, GONE_AT, GAUGE = range(4)
N_PF = 4
# ---- per-pod counters: pc[pod, ...] (TEI's counters and histogram sums) ----
(C_REQ_SINGLE, C_REQ_BATCH, C_OK_SINGLE, C_OK_BATCH, C_OVERLOADED, C_BATCH_SIZE_ERR, C_BATCHES, C_BATCH_TOKENS,
 C_BATCH_INPUTS, C_DUR_SUM, C_QDUR_SUM, C_IDUR_SUM, C_INPUTS_OK, C_TOKENS_OK) = range(14)
N_PC = 14
# ---- phases (shared with simulator.py) ----
PENDING, LOADING, READY, DRAINING, GONE = range(5)
# ---- profile parameters: prof[...] ----
(P_OVERHEAD, P_SPT, P_SPT_SQ, P_MAX_BATCH_TOKENS, P_MAX_BATCH_REQUESTS, P_MAX_CONCURRENT, P_MAX_CLIENT_BATCH,
 P_MAX_INPUT) = range(8)
# ---- bulk parameters: bp[...] ----
B_START, B_STOP, B_INPUTS, B_TMIN, B_TMAX, B_BACKOFF0, B_BACKOFF_MAX, B_SEED = range(8)
# ---- routing parameters: rp[...] ----
R_MODE, R_CONN_LIFE, R_SEED, R_CONN_BASE = range(4)
ROUTE_RANDOM, ROUTE_KEEPALIVE = 0, 1
# ---- scalar run state: st[...] ----
S_NEXT_ARRIVAL, S_N_ATTEMPTS, S_N_ACTIVE, S_GONE_POD, S_N_LOG = range(5)
N_ST = 5
# ---- return codes ----
DONE, NEED_ROOM, POD_GONE = 0, 1, 2

SIZE_BOUNDS = np.array([2.0**i for i in range(13)])
TOKEN_BOUNDS = np.array([2.0**i for i in range(21)])
DURATION_BOUNDS = np.array([1e-5 * 1.5**i for i in range(1, 36)])


@njit(cache=True, inline="always")
def _mix(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def uniform(seed, a, b, c):
    """A uniform number in [0, 1) that depends only on its four non-negative integer arguments (splitmix64)."""
    x = _mix(np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15))
    x = _mix(x ^ np.uint64(a))
    x = _mix(x ^ (np.uint64(b) * np.uint64(0x9E3779B97F4A7C15)))
    x = _mix(x ^ (np.uint64(c) * np.uint64(0xD6E8FEB86659FD93)))
    return float(x >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def _pow2_bucket(value, n_bounds):
    """Index of the first bound 2^i >= value among 2^0..2^(n_bounds-1) (n_bounds = the +Inf bucket)."""
    i = 0
    bound = 1
    while i < n_bounds and value > bound:
        bound *= 2
        i += 1
    return i


@njit(cache=True)
def _form(p, t, ps, pf, pc, q_tok, mask, prof, h_size, h_tok, st, blog):
    """Form the next batch from the head of pod p's queue into the parking slot; returns its number of inputs.
    With room in `blog` (tests), each formed batch is logged as (pod, time, inputs, tokens, gauge after)."""
    mbt = prof[P_MAX_BATCH_TOKENS]
    mbr = prof[P_MAX_BATCH_REQUESTS]  # 0 = no limit
    i = ps[p, QUEUE_LO]
    tail = ps[p, TAIL]
    count = 0
    tokens = 0
    tokens_sq = 0
    while i < tail:
        n = q_tok[p, i & mask]
        if tokens + n > mbt:
            break
        count += 1
        tokens += n
        tokens_sq += n * n
        i += 1
        if mbr > 0 and count >= mbr:
            break
    h_size[p, _pow2_bucket(count, 13)] += 1.0
    h_tok[p, _pow2_bucket(tokens, 21)] += 1.0
    pc[p, C_BATCHES] += 1.0
    pc[p, C_BATCH_TOKENS] += tokens
    pc[p, C_BATCH_INPUTS] += count
    ps[p, QUEUE_LO] = i
    ps[p, PARK_TOK] = tokens
    ps[p, PARK_SQ] = tokens_sq
    pf[p, GAUGE] = float(tail - i)
    k = st[S_N_LOG]
    if k < blog.shape[0]:
        blog[k, 0] = p
        blog[k, 1] = t
        blog[k, 2] = count
        blog[k, 3] = tokens
        blog[k, 4] = tail - i
        st[S_N_LOG] = k + 1
    return count


@njit(cache=True)
def _pump(p, t, ps, pf, pc, q_tok, mask, prof, h_size, h_tok, st, blog):
    """Let pod p's backend and batching task move on at time t until both wait (ReplicaModel._pump)."""
    while True:
        if pf[p, RUN_END] == np.inf and ps[p, QUEUE_LO] > ps[p, PARK_LO]:
            # the idle backend takes the parked batch
            pf[p, RUN_START] = t
            # same association as Profile.batch_seconds, so both give the same float
            pf[p, RUN_END] = t + (prof[P_OVERHEAD] + prof[P_SPT] * ps[p, PARK_TOK] + prof[P_SPT_SQ] * ps[p, PARK_SQ])
            ps[p, PARK_LO] = ps[p, QUEUE_LO]
        if ps[p, AWAKE] == 1:
            if ps[p, QUEUE_LO] > ps[p, PARK_LO]:
                return  # waiting for the slot
            if _form(p, t, ps, pf, pc, q_tok, mask, prof, h_size, h_tok, st, blog) == 0:
                ps[p, AWAKE] = 0
            continue
        if ps[p, NOTIFIED] == 1:
            ps[p, NOTIFIED] = 0
            ps[p, AWAKE] = 1
            continue
        return


@njit(cache=True)
def _route(key, u, t, n_ready, ready, phase_ok, conn, rp, conn_pod, conn_expire):
    """The Ready pod a request goes to: a uniform pick (kube-proxy), or the pod its kept-alive connection holds."""
    if rp[R_MODE] == ROUTE_KEEPALIVE and conn >= 0:
        p = conn_pod[conn]
        if p >= 0 and phase_ok[p] == READY and t < conn_expire[conn]:
            return p
        p = ready[min(n_ready - 1, int(u * n_ready))]
        conn_pod[conn] = p
        life = -np.log(1.0 - uniform(int(rp[R_SEED]), 7, conn, key)) * rp[R_CONN_LIFE]
        conn_expire[conn] = t + life
        return p
    return ready[min(n_ready - 1, int(u * n_ready))]


@njit(cache=True)
def _enqueue(p, t, n, first_token, tokens_src, req_id, ps, pf, q_tok, q_req, mask):
    base = ps[p, TAIL]
    for j in range(n):
        slot = (base + j) & mask
        q_tok[p, slot] = tokens_src[first_token + j]
        q_req[p, slot] = req_id
    ps[p, TAIL] = base + n
    pf[p, GAUGE] += n
    ps[p, QUEUED_EVER] = 1
    ps[p, INFLIGHT] += 1
    ps[p, NOTIFIED] = 1


@njit(cache=True)
def _finish(p, t, ps, pf, pc, q_tok, q_req, mask, prof, h_size, h_tok, h_dur, st, blog,
            a_t, a_off, a_done, a_status, a_left, a_qsum, a_isum,
            b_t, b_done, b_status, b_left, b_qsum, b_isum, b_worker, b_inputs, w_next, w_seq, w_retry, bp):
    """Pod p's running batch ends at t: every input gives its permit back; finished requests are answered."""
    start = pf[p, RUN_START]
    for pos in range(ps[p, RUN_LO], ps[p, PARK_LO]):
        slot = pos & mask
        r = q_req[p, slot]
        if r >= 0:
            a_qsum[r] += start - a_t[r]
            a_isum[r] += t - start
            a_left[r] -= 1
            if a_left[r] == 0:
                n = a_off[r + 1] - a_off[r]
                a_done[r] = t
                a_status[r] = 200
                _answered(p, t - a_t[r], a_qsum[r] / n, a_isum[r] / n, n, ps, pc, h_dur)
        else:
            k = -r - 1
            b_qsum[k] += start - b_t[k]
            b_isum[k] += t - start
            b_left[k] -= 1
            if b_left[k] == 0:
                n = b_inputs[k]
                b_done[k] = t
                b_status[k] = 200
                _answered(p, t - b_t[k], b_qsum[k] / n, b_isum[k] / n, n, ps, pc, h_dur)
                w = b_worker[k]
                w_seq[w] += 1
                w_retry[w] = 0
                w_next[w] = t if t < bp[B_STOP] else np.inf
        pc[p, C_TOKENS_OK] += q_tok[p, slot]
    ps[p, RUN_LO] = ps[p, PARK_LO]
    pf[p, RUN_END] = np.inf
    _pump(p, t, ps, pf, pc, q_tok, mask, prof, h_size, h_tok, st, blog)


@njit(cache=True)
def _answered(p, total, queue_mean, inference_mean, n, ps, pc, h_dur):
    ps[p, INFLIGHT] -= 1
    if n == 1:
        pc[p, C_OK_SINGLE] += 1.0
    else:
        pc[p, C_OK_BATCH] += 1.0
    pc[p, C_INPUTS_OK] += n
    pc[p, C_DUR_SUM] += total
    pc[p, C_QDUR_SUM] += queue_mean
    pc[p, C_IDUR_SUM] += inference_mean
    h_dur[p, 0, np.searchsorted(DURATION_BOUNDS, total)] += 1.0
    h_dur[p, 1, np.searchsorted(DURATION_BOUNDS, queue_mean)] += 1.0
    h_dur[p, 2, np.searchsorted(DURATION_BOUNDS, inference_mean)] += 1.0


@njit(cache=True)
def _admit(p, n, ps, pc, prof):
    """TEI's checks at admission: returns 0 (queued), 413-ish 422 for too many inputs, or 429."""
    if n == 1:
        pc[p, C_REQ_SINGLE] += 1.0
    else:
        pc[p, C_REQ_BATCH] += 1.0
    if n > prof[P_MAX_CLIENT_BATCH]:
        pc[p, C_BATCH_SIZE_ERR] += 1.0
        return 422
    if n > prof[P_MAX_CONCURRENT] - (ps[p, TAIL] - ps[p, RUN_LO]):
        pc[p, C_OVERLOADED] += 1.0
        return 429
    return 0


@njit(cache=True)
def run(t_stop, stop_on_gone, st, prof, rp, bp,
        ps, pf, pc, q_tok, q_req, mask, h_size, h_tok, h_dur,
        ready, n_ready, active,
        a_t, a_off, a_tok, a_conn, a_u, a_done, a_status, a_pod, a_left, a_qsum, a_isum,
        conn_pod, conn_expire,
        w_next, w_seq, w_retry, b_t, b_done, b_status, b_pod, b_left, b_qsum, b_isum, b_worker, b_seq, b_inputs,
        b_tok, blog):
    """Process every event at or before t_stop. Returns (time reached, code): DONE, NEED_ROOM (the bulk attempt
    arrays are full: grow them and call again) or POD_GONE (a draining pod finished; st[S_GONE_POD] says which)."""
    n_arr = a_t.shape[0]
    n_workers = w_next.shape[0]
    n_inputs_bulk = int(bp[B_INPUTS])
    capacity = b_t.shape[0]
    ai = st[S_NEXT_ARRIVAL]
    phase = ps[:, PHASE]
    while True:
        # the earliest event: a batch ending, a bulk worker sending, an open-loop arrival (ties in that order)
        tp = np.inf
        pp = -1
        for k in range(st[S_N_ACTIVE]):
            p = active[k]
            if pf[p, RUN_END] < tp:
                tp = pf[p, RUN_END]
                pp = p
        tw = np.inf
        ww = -1
        for w in range(n_workers):
            if w_next[w] < tw:
                tw = w_next[w]
                ww = w
        ta = a_t[ai] if ai < n_arr else np.inf
        if tp <= tw and tp <= ta:
            if tp > t_stop:
                break
            _finish(pp, tp, ps, pf, pc, q_tok, q_req, mask, prof, h_size, h_tok, h_dur, st, blog,
                    a_t, a_off, a_done, a_status, a_left, a_qsum, a_isum,
                    b_t, b_done, b_status, b_left, b_qsum, b_isum, b_worker, b_inputs, w_next, w_seq, w_retry, bp)
            if phase[pp] == DRAINING and ps[pp, TAIL] == ps[pp, RUN_LO]:
                phase[pp] = GONE
                pf[pp, GONE_AT] = tp
                for k in range(st[S_N_ACTIVE]):
                    if active[k] == pp:
                        active[k] = active[st[S_N_ACTIVE] - 1]
                        st[S_N_ACTIVE] -= 1
                        break
                if stop_on_gone:
                    st[S_NEXT_ARRIVAL] = ai
                    st[S_GONE_POD] = pp
                    return tp, POD_GONE
        elif tw <= ta:
            if tw > t_stop:
                break
            w = ww
            if tw >= bp[B_STOP]:
                w_next[w] = np.inf
                continue
            k = st[S_N_ATTEMPTS]
            if k >= capacity:
                st[S_NEXT_ARRIVAL] = ai
                return tw, NEED_ROOM
            st[S_N_ATTEMPTS] = k + 1
            seed = int(bp[B_SEED])
            b_t[k] = tw
            b_worker[k] = w
            b_seq[k] = w_seq[w]
            b_inputs[k] = n_inputs_bulk
            span = int(bp[B_TMAX] - bp[B_TMIN]) + 1
            for j in range(n_inputs_bulk):
                b_tok[j] = min(int(prof[P_MAX_INPUT]), int(bp[B_TMIN]) + int(uniform(seed, 1, w, w_seq[w] * 4096 + j) * span))
            status = 503
            if n_ready > 0:
                u = uniform(seed, 2, w, k)
                p = _route(k, u, tw, n_ready, ready, phase, int(rp[R_CONN_BASE]) + w, rp, conn_pod, conn_expire)
                b_pod[k] = p
                status = _admit(p, n_inputs_bulk, ps, pc, prof)
                if status == 0:
                    _enqueue(p, tw, n_inputs_bulk, 0, b_tok, -(k + 1), ps, pf, q_tok, q_req, mask)
                    b_left[k] = n_inputs_bulk
                    w_next[w] = np.inf
                    _pump(p, tw, ps, pf, pc, q_tok, mask, prof, h_size, h_tok, st, blog)
            if status != 0:
                b_status[k] = status
                b_done[k] = tw
                delay = min(bp[B_BACKOFF_MAX], bp[B_BACKOFF0] * 2.0 ** min(w_retry[w], 60))
                w_next[w] = tw + delay * (0.5 + 0.5 * uniform(seed, 3, w, k))
                w_retry[w] += 1
        else:
            if ta > t_stop:
                break
            r = ai
            ai += 1
            n = a_off[r + 1] - a_off[r]
            if n_ready == 0:
                a_status[r] = 503
                a_done[r] = ta
                continue
            p = _route(r, a_u[r], ta, n_ready, ready, phase, a_conn[r], rp, conn_pod, conn_expire)
            a_pod[r] = p
            status = _admit(p, n, ps, pc, prof)
            if status != 0:
                a_status[r] = status
                a_done[r] = ta
                continue
            _enqueue(p, ta, n, a_off[r], a_tok, r, ps, pf, q_tok, q_req, mask)
            a_left[r] = n
            _pump(p, ta, ps, pf, pc, q_tok, mask, prof, h_size, h_tok, st, blog)
    st[S_NEXT_ARRIVAL] = ai
    return t_stop, DONE
