"""The simulator's compiled event loop: every replica's TEI router, every request, in simulated time.

This is `tei_operator.emulator.batching.ReplicaModel` (the batching model the emulator shares) written on arrays
for numba, for a whole fleet at once. The rules are the same, step for step (the sections of `run` are marked):

- "pump" is ReplicaModel._pump: the backend takes the parked batch when idle; the awake batching task forms the
  next batch whenever the slot is free (an empty batch puts it back to sleep); a notification wakes it.
- "form" is batching.take_batch without abandoned entries (simulated clients never give up): FIFO, up to
  max_batch_tokens and max_batch_requests, the first entry that does not fit ends the batch; every formed batch,
  empty ones included, is observed and resets the queue gauge to what is left.
- "admit" is ReplicaModel.arrive: te_request_count, then all permits or a 429, then +1 gauge per input.
- "finish" is ReplicaModel.finish: each input gives its permit back; a request is answered when its last input is.

It is one function on purpose: numba reference-counts every array passed to a function that is not inlined (two
atomic operations per array per call), which cost more than the simulation itself when the rules were helpers.

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
# ---- bulk worker parameters: wp[worker, ...] (a worker's group's settings, and its index within the group) ----
B_START, B_STOP, B_INPUTS, B_TMIN, B_TMAX, B_BACKOFF0, B_BACKOFF_MAX, B_SEED, B_LOCAL = range(9)
N_BP = 9
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
def series_rows(pods, ps, pf, pc, h_size, h_tok, h_dur, counter_columns, out):
    """Fill out[i] with every exported series of pod pods[i], in simulator.SERIES order; NaN where TEI has not
    created the series yet (a gauge before its first input, a counter at 0, a histogram without observations)."""
    for i in range(pods.shape[0]):
        p = pods[i]
        col = 0
        out[i, col] = pf[p, GAUGE] if ps[p, QUEUED_EVER] > 0 else np.nan
        col += 1
        for c in counter_columns:
            out[i, col] = pc[p, c] if pc[p, c] > 0 else np.nan
            col += 1
        for h in range(5):
            if h == 0:
                hist = h_size[p]
                total = pc[p, C_BATCH_INPUTS]
                count = pc[p, C_BATCHES]
            elif h == 1:
                hist = h_tok[p]
                total = pc[p, C_BATCH_TOKENS]
                count = pc[p, C_BATCHES]
            else:
                hist = h_dur[p, h - 2]
                total = pc[p, C_DUR_SUM + (h - 2)]
                count = pc[p, C_OK_SINGLE] + pc[p, C_OK_BATCH]
            width = hist.shape[0]
            if count <= 0:
                for j in range(width + 2):
                    out[i, col + j] = np.nan
            else:
                cumulative = 0.0
                for j in range(width - 1):
                    cumulative += hist[j]
                    out[i, col + j] = cumulative
                out[i, col + width - 1] = count  # +Inf
                out[i, col + width] = total
                out[i, col + width + 1] = count
            col += width + 2


@njit(cache=True)
def run(t_stop, stop_on_gone, st, prof, rp, wp,
        ps, pf, pc, q_tok, q_req, mask, h_size, h_tok, h_dur,
        ready, n_ready, active,
        a_t, a_off, a_tok, a_conn, a_u, a_done, a_status, a_pod, a_left, a_qsum, a_isum,
        conn_pod, conn_expire,
        w_next, w_seq, w_retry, b_t, b_done, b_status, b_pod, b_left, b_qsum, b_isum, b_worker, b_seq, b_inputs,
        b_ntok, b_tok, blog):
    """Process every event at or before t_stop. Returns (time reached, code): DONE, NEED_ROOM (the bulk attempt
    arrays are full: grow them and call again) or POD_GONE (a draining pod finished; st[S_GONE_POD] says which)."""
    n_arr = a_t.shape[0]
    n_workers = w_next.shape[0]
    capacity = b_t.shape[0]
    overhead = prof[P_OVERHEAD]
    spt = prof[P_SPT]
    spt_sq = prof[P_SPT_SQ]
    mbt = int(prof[P_MAX_BATCH_TOKENS])
    mbr = int(prof[P_MAX_BATCH_REQUESTS])  # 0 = no limit
    max_concurrent = int(prof[P_MAX_CONCURRENT])
    max_client_batch = int(prof[P_MAX_CLIENT_BATCH])
    max_input = int(prof[P_MAX_INPUT])
    keepalive = rp[R_MODE] == ROUTE_KEEPALIVE
    route_seed = int(rp[R_SEED])
    conn_life = rp[R_CONN_LIFE]
    conn_base = int(rp[R_CONN_BASE])
    log_room = blog.shape[0]
    ai = st[S_NEXT_ARRIVAL]
    while True:
        # ---- the earliest event: a batch ending, a bulk worker sending, an open-loop arrival (ties in that order)
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
        p = -1  # the pod whose tasks must move on after this event
        now = 0.0
        finished = False
        if tp <= tw and tp <= ta:
            if tp > t_stop:
                break
            # ---- finish: pod pp's running batch ends; every input gives its permit back
            p = pp
            now = tp
            finished = True
            start = pf[p, RUN_START]
            for pos in range(ps[p, RUN_LO], ps[p, PARK_LO]):
                slot = pos & mask
                r = q_req[p, slot]
                n_done = 0
                if r >= 0:
                    a_qsum[r] += start - a_t[r]
                    a_isum[r] += now - start
                    a_left[r] -= 1
                    if a_left[r] == 0:
                        n_done = a_off[r + 1] - a_off[r]
                        a_done[r] = now
                        a_status[r] = 200
                        total = now - a_t[r]
                        q_mean = a_qsum[r] / n_done
                        i_mean = a_isum[r] / n_done
                else:
                    k = -r - 1
                    b_qsum[k] += start - b_t[k]
                    b_isum[k] += now - start
                    b_left[k] -= 1
                    if b_left[k] == 0:
                        n_done = b_inputs[k]
                        b_done[k] = now
                        b_status[k] = 200
                        total = now - b_t[k]
                        q_mean = b_qsum[k] / n_done
                        i_mean = b_isum[k] / n_done
                        w = b_worker[k]
                        w_seq[w] += 1
                        w_retry[w] = 0
                        w_next[w] = now if now < wp[w, B_STOP] else np.inf
                if n_done > 0:  # the request is answered
                    ps[p, INFLIGHT] -= 1
                    if n_done == 1:
                        pc[p, C_OK_SINGLE] += 1.0
                    else:
                        pc[p, C_OK_BATCH] += 1.0
                    pc[p, C_INPUTS_OK] += n_done
                    pc[p, C_DUR_SUM] += total
                    pc[p, C_QDUR_SUM] += q_mean
                    pc[p, C_IDUR_SUM] += i_mean
                    h_dur[p, 0, np.searchsorted(DURATION_BOUNDS, total)] += 1.0
                    h_dur[p, 1, np.searchsorted(DURATION_BOUNDS, q_mean)] += 1.0
                    h_dur[p, 2, np.searchsorted(DURATION_BOUNDS, i_mean)] += 1.0
                pc[p, C_TOKENS_OK] += q_tok[p, slot]
            ps[p, RUN_LO] = ps[p, PARK_LO]
            pf[p, RUN_END] = np.inf
        else:
            # ---- a request arrives: from a bulk worker, or the next open-loop one
            if tw <= ta:
                if tw > t_stop:
                    break
                now = tw
                w = ww
                if now >= wp[w, B_STOP]:
                    w_next[w] = np.inf
                    continue
                # draws keyed by (group seed, worker in group, request number, retry): never by event order
                bulk_seed = int(wp[w, B_SEED])
                local = int(wp[w, B_LOCAL])
                draw = w_seq[w] * 1024 + min(w_retry[w], 1023)
                n_inputs_bulk = int(wp[w, B_INPUTS])
                k = st[S_N_ATTEMPTS]
                if k >= capacity:
                    st[S_NEXT_ARRIVAL] = ai
                    return now, NEED_ROOM
                st[S_N_ATTEMPTS] = k + 1
                b_t[k] = now
                b_worker[k] = w
                b_seq[k] = w_seq[w]
                b_inputs[k] = n_inputs_bulk
                span = int(wp[w, B_TMAX] - wp[w, B_TMIN]) + 1
                b_ntok[k] = 0
                for j in range(n_inputs_bulk):
                    b_tok[j] = min(max_input, int(wp[w, B_TMIN])
                                   + int(uniform(bulk_seed, 1, local, w_seq[w] * 4096 + j) * span))
                    b_ntok[k] += b_tok[j]
                n = n_inputs_bulk
                req_id = -(k + 1)
                conn = conn_base + w
                u = uniform(bulk_seed, 2, local, draw)
                key = (1 << 40) + local * (1 << 24) + draw
                tokens_src = b_tok
                first_token = 0
            else:
                if ta > t_stop:
                    break
                now = ta
                r = ai
                ai += 1
                n = a_off[r + 1] - a_off[r]
                req_id = r
                conn = a_conn[r]
                u = a_u[r]
                key = r
                tokens_src = a_tok
                first_token = a_off[r]
            status = 503
            if n_ready > 0:
                # ---- route: a uniform pick among Ready pods (kube-proxy), or the pod a kept-alive connection holds
                q = -1
                if keepalive and conn >= 0:
                    q = conn_pod[conn]
                    if q < 0 or ps[q, PHASE] != READY or now >= conn_expire[conn]:
                        q = ready[min(n_ready - 1, int(u * n_ready))]
                        conn_pod[conn] = q
                        conn_expire[conn] = now - np.log(1.0 - uniform(route_seed, 7, conn, key)) * conn_life
                else:
                    q = ready[min(n_ready - 1, int(u * n_ready))]
                # ---- admit: counted, then all permits or a refusal (ReplicaModel.arrive)
                if n == 1:
                    pc[q, C_REQ_SINGLE] += 1.0
                else:
                    pc[q, C_REQ_BATCH] += 1.0
                if n > max_client_batch:
                    pc[q, C_BATCH_SIZE_ERR] += 1.0
                    status = 422
                elif n > max_concurrent - (ps[q, TAIL] - ps[q, RUN_LO]):
                    pc[q, C_OVERLOADED] += 1.0
                    status = 429
                else:
                    status = 0
                    base = ps[q, TAIL]
                    for j in range(n):
                        slot = (base + j) & mask
                        q_tok[q, slot] = tokens_src[first_token + j]
                        q_req[q, slot] = req_id
                    ps[q, TAIL] = base + n
                    pf[q, GAUGE] += n
                    ps[q, QUEUED_EVER] = 1
                    ps[q, INFLIGHT] += 1
                    ps[q, NOTIFIED] = 1
                    p = q
                if req_id >= 0:
                    a_pod[req_id] = q
                else:
                    b_pod[-req_id - 1] = q
            if req_id >= 0:
                if status == 0:
                    a_left[req_id] = n
                else:
                    a_status[req_id] = status
                    a_done[req_id] = now
            else:
                k = -req_id - 1
                if status == 0:
                    b_left[k] = n
                    w_next[w] = np.inf  # waits for the answer
                else:
                    b_status[k] = status
                    b_done[k] = now
                    delay = min(wp[w, B_BACKOFF_MAX], wp[w, B_BACKOFF0] * 2.0 ** min(w_retry[w], 60))
                    w_next[w] = now + delay * (0.5 + 0.5 * uniform(bulk_seed, 3, local, draw))
                    w_retry[w] += 1
        if p < 0:
            continue
        # ---- pump: pod p's backend and batching task move on until both wait (ReplicaModel._pump)
        while True:
            if pf[p, RUN_END] == np.inf and ps[p, QUEUE_LO] > ps[p, PARK_LO]:
                # the idle backend takes the parked batch (same association as Profile.batch_seconds)
                pf[p, RUN_START] = now
                pf[p, RUN_END] = now + (overhead + spt * ps[p, PARK_TOK] + spt_sq * ps[p, PARK_SQ])
                ps[p, PARK_LO] = ps[p, QUEUE_LO]
            if ps[p, AWAKE] == 1:
                if ps[p, QUEUE_LO] > ps[p, PARK_LO]:
                    break  # waiting for the slot
                # ---- form: the next batch from the head of the queue into the slot (batching.take_batch)
                i = ps[p, QUEUE_LO]
                tail = ps[p, TAIL]
                count = 0
                tokens = 0
                tokens_sq = 0
                while i < tail:
                    m = q_tok[p, i & mask]
                    if tokens + m > mbt:
                        break
                    count += 1
                    tokens += m
                    tokens_sq += m * m
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
                if k < log_room:
                    blog[k, 0] = p
                    blog[k, 1] = now
                    blog[k, 2] = count
                    blog[k, 3] = tokens
                    blog[k, 4] = tail - i
                    st[S_N_LOG] = k + 1
                if count == 0:
                    ps[p, AWAKE] = 0
                continue
            if ps[p, NOTIFIED] == 1:
                ps[p, NOTIFIED] = 0
                ps[p, AWAKE] = 1
                continue
            break
        # ---- a draining pod with nothing left in flight is gone
        if finished and ps[p, PHASE] == DRAINING and ps[p, TAIL] == ps[p, RUN_LO]:
            ps[p, PHASE] = GONE
            pf[p, GONE_AT] = now
            for k in range(st[S_N_ACTIVE]):
                if active[k] == p:
                    active[k] = active[st[S_N_ACTIVE] - 1]
                    st[S_N_ACTIVE] -= 1
                    break
            if stop_on_gone:
                st[S_NEXT_ARRIVAL] = ai
                st[S_GONE_POD] = p
                return now, POD_GONE
    st[S_NEXT_ARRIVAL] = ai
    return t_stop, DONE
