#!/usr/bin/env python3
"""fuzz/gen-corpus.py: write the seed corpus of the fuzz harnesses.

    python3 fuzz/gen-corpus.py [--check-core BIN] [--check-process BIN]
        [--check-async BIN] [--check-chain BIN] [OUTDIR]

writes OUTDIR/core/*, OUTDIR/process/*, OUTDIR/async/* and OUTDIR/chain/* (OUTDIR
defaults to fuzz/corpus beside this script): named scenarios written by
hand in the harnesses' byte code (see fuzz-core.c, fuzz-process.c,
fuzz-async.c and fuzz-chain.c), then deterministic random programs.  With
--check-HARNESS, each input is first run by BIN (a harness or a
regression driver taking files): an input that crashes the tree as it is
now is written to fuzz/pending/HARNESS/ instead, since the seed corpus is
also a test of "make check".
"""
import os
import random
import subprocess
import sys
import tempfile

# fuzz-core.c's opcodes, in enum order.
(OP_NEW, OP_NEW_CANCELLABLE, OP_NEW_MULTI, OP_SUCCEED, OP_ADD, OP_ADD_FULL,
 OP_CHAIN_TO, OP_CALLBACK, OP_ERRBACK, OP_PAUSE, OP_UNPAUSE, OP_CANCEL,
 OP_REF, OP_UNREF, OP_COMBINE, OP_SEM, OP_LOCK, OP_QUEUE, OP_EMIT,
 OP_FINISH, OP_END, OP_RESULT, OP_TAKE, OP_FAIL_ALLOC, OP_ADD2,
 OP_FIRE2) = range(26)

# Callback actions (enum cb_action).
(CB_PASS, CB_TOKEN, CB_INT, CB_FAIL, CB_SLOT, CB_SELF, CB_SUCCEED,
 CB_FAILED, CB_NEW_IN_SLOT, CB_FIRE_SLOT, CB_ERRBACK_SLOT, CB_CANCEL_SLOT,
 CB_UNREF_SLOT, CB_ADD_TO_SLOT, CB_PAUSE_SLOT, CB_UNPAUSE_SLOT,
 CB_TAKE_SLOT, CB_RECOVER) = range(18)


def new(s): return [OP_NEW, s]
def succeed(s): return [OP_SUCCEED, s]
def fail_now(s): return [OP_SUCCEED, 0x80 | s]
def add(s, kind, action, x=0, full=False):
    return [OP_ADD_FULL if full else OP_ADD, s, kind, action, x]
def pair(s, a1, x1, a2, x2, full=False):
    return [OP_ADD_FULL if full else OP_ADD, s, 3, a1, x1, a2, x2]
def fire(s): return [OP_CALLBACK, s]
def errback(s, code=0): return [OP_ERRBACK, (code << 3) | s]
def cancel(s): return [OP_CANCEL, s]
def pause(s): return [OP_PAUSE, s]
def unpause(s): return [OP_UNPAUSE, s]
def unref(s): return [OP_UNREF, s]
def ref(s, t): return [OP_REF, s, t]
def chain_to(s, t): return [OP_CHAIN_TO, s, t]
def cancellable(s, action, x=0, multi=False):
    return [OP_NEW_CANCELLABLE, s, (0x80 if multi else 0) | action, x]
def combine(kind, slots, flags, dest):
    mask = 0
    for s in slots:
        mask |= 1 << s
    return [OP_COMBINE, kind, mask, flags, dest]
def multi(s, flow=0, x=0): return [OP_NEW_MULTI, (x << 5) | (flow << 3) | s]
def emit(s, failed=False): return [OP_EMIT, (0x80 if failed else 0) | s]
def finish(s, failed=False): return [OP_FINISH, (0x80 if failed else 0) | s]
def end(s, t): return [OP_END, s, t]
def take(s): return [OP_TAKE, s]
def result(s): return [OP_RESULT, s]


CORE = {
    "fire-then-add": new(0) + fire(0) + add(0, 0, CB_TOKEN) + add(0, 2, CB_PASS, full=True),
    "add-then-fire": new(0) + add(0, 0, CB_FAIL) + add(0, 1, CB_RECOVER) + fire(0) + take(0),
    "errback-chain": new(0) + pair(0, CB_TOKEN, 0, CB_RECOVER, 0, True) + errback(0),
    "chain-wait": new(0) + new(1) + add(0, 0, CB_SLOT, 1) + fire(0) + fire(1),
    "chain-self": new(0) + add(0, 0, CB_SELF) + fire(0),
    "chain-cycle": new(0) + new(1) + add(0, 0, CB_SLOT, 1) + add(1, 0, CB_SLOT, 0) + fire(0) + fire(1),
    "chain-to": new(0) + new(1) + chain_to(0, 1) + add(1, 2, CB_TOKEN, full=True) + fire(0),
    "pause-unpause": new(0) + pause(0) + fire(0) + add(0, 0, CB_TOKEN) + unpause(0) + unpause(0),
    "cancel-plain": new(0) + add(0, 1, CB_RECOVER) + cancel(0) + fire(0) + fire(0),
    "cancel-canceller-fires": cancellable(0, 1) + add(0, 0, CB_PASS) + cancel(0) + fire(0),
    "cancel-canceller-other": cancellable(0, 3, 1) + cancellable(1, 3, 0) + cancel(0),
    "cancel-waiting": new(0) + new(1) + add(0, 0, CB_SLOT, 1) + fire(0) + cancel(0),
    "refs": new(0) + ref(0, 1) + unref(0) + fire(1) + ref(1, 2) + unref(1) + unref(2),
    "succeed-fail": succeed(0) + fail_now(1) + add(1, 1, CB_RECOVER) + take(0) + result(1),
    "gather": new(0) + new(1) + combine(0, [0, 1], 0, 2) + fire(1) + fire(0) + take(2),
    "gather-fail": new(0) + new(1) + combine(0, [0, 1], 1, 2) + errback(0) + fire(1),
    "gather-cancel": new(0) + new(1) + combine(0, [0, 1], 0, 2) + cancel(2),
    "list-flags": new(0) + new(1) + combine(1, [0, 1], 2, 2) + errback(0) + fire(1),
    "list-fire-on-failure": new(0) + new(1) + combine(1, [0, 1], 5, 3) + errback(1),
    "race": new(0) + cancellable(1, 0) + combine(2, [0, 1], 0, 2) + fire(0),
    "race-all-fail": new(0) + new(1) + combine(2, [0, 1], 0, 2) + errback(0) + errback(1),
    "merge-single": new(0) + new(1) + combine(3, [0, 1], 0x20, 2) + add(2, 0, CB_TOKEN) + fire(0) + fire(1),
    "merge-multi": multi(0) + new(1) + combine(3, [0, 1], 0, 2) + add(2, 2, CB_PASS) + unpause(2)
        + emit(0) + emit(0, True) + finish(0) + fire(1),
    "merge-dup": new(0) + combine(3, [0], 0x30, 1) + fire(0),
    "empty-combinators": combine(0, [], 0, 0) + combine(1, [], 0, 1) + combine(2, [], 0, 2) + combine(3, [], 0, 3),
    "multi-rows": multi(0) + add(0, 0, CB_TOKEN) + emit(0) + emit(0) + end(0, 1) + finish(0),
    "multi-wait-row": multi(0) + add(0, 0, CB_NEW_IN_SLOT, 3) + emit(0) + emit(0) + fire(3) + fire(3) + finish(0),
    "multi-flow": multi(0, 1) + add(0, 0, CB_NEW_IN_SLOT, 3) + emit(0) + emit(0) + pause(0) + unpause(0) + fire(3),
    "multi-cancel": cancellable(0, 0, 0, True) + add(0, 0, CB_PASS) + emit(0) + cancel(0) + emit(0),
    "multi-failed-row": multi(0) + add(0, 0, CB_FAIL) + emit(0) + emit(0),
    "semaphore": [OP_SEM, 1, 0] + [OP_SEM, 4, 1] + [OP_SEM, 4, 2] + [OP_SEM, 8, 3, CB_TOKEN, 0]
        + [OP_SEM, 4, 0] + [OP_SEM, 16, 0] + cancel(2),
    "lock": [OP_LOCK, 0, 0] + [OP_LOCK, 2, 1, CB_SLOT, 3] + [OP_LOCK, 0, 2] + [OP_LOCK, 1, 0]
        + [OP_LOCK, 4, 0] + [OP_LOCK, 1, 0],
    "lock-run-fail": [OP_LOCK, 2, 1, CB_FAIL, 0] + [OP_LOCK, 2, 2, CB_TOKEN, 0] + add(1, 1, CB_RECOVER),
    "queue": [OP_QUEUE, 0x18, 0] + [OP_QUEUE, 0x19, 0] + [OP_QUEUE, 0x1a, 1] + [OP_QUEUE, 0x1a, 2]
        + [OP_QUEUE, 0x1a, 3] + cancel(3) + [OP_QUEUE, 0x18, 0],
    "queue-bounded": [OP_QUEUE, 0x20, 0] + [OP_QUEUE, 0x20, 0] + [OP_QUEUE, 0x22, 1] + [OP_QUEUE, 0x22, 2],
    "side-effects": new(0) + new(1) + new(2) + add(0, 0, CB_FIRE_SLOT, 1) + add(1, 0, CB_CANCEL_SLOT, 2)
        + add(2, 2, CB_UNREF_SLOT, 0) + fire(0),
    "side-effects-2": new(0) + new(1) + add(0, 0, CB_ADD_TO_SLOT, 1) + add(0, 0, CB_PAUSE_SLOT, 1)
        + fire(1) + add(0, 0, CB_UNPAUSE_SLOT, 1) + fire(0) + add(1, 0, CB_TAKE_SLOT, 0),
    "fail-alloc": [OP_FAIL_ALLOC, 2] + new(0) + add(0, 0, CB_TOKEN, full=True) + fire(0)
        + [OP_FAIL_ALLOC, 5] + combine(0, [0], 0, 1),
}

# fuzz-process.c: header byte h, producers (two bytes each), processors
# (two bytes each), consumer (two bytes), then events of two bytes each.
def header(nprod, nproc, paused=False, no_consumer=False):
    return [(0x80 if no_consumer else 0) | (nproc << 3) | ((nprod - 1) << 1) | (1 if paused else 0)]
def p_array(n, token_mask): return [(n << 2) | 0, token_mask]
def p_multi(): return [1, 0]
def p_user(script, param): return [(script << 2) | 2, param]
def q_map(mode): return [0, mode]
def q_filter(mode): return [1, mode]
def q_batch(n): return [2, n]
def q_user(mode, param, autopause=False, resume=False):
    return [(0x80 if autopause else 0) | (0x40 if resume else 0) | ((mode & 0xf) << 2) | 3, param]
def c_collect(): return [0, 0]
def c_reduce(mode, token=False): return [1, (0x80 if token else 0) | mode]
def c_first(): return [2, 0]
def c_to_multi(mode): return [3, mode]
def c_user(mode, param, autopause=False): return [(0x80 if autopause else 0) | ((mode & 0xf) << 3) | 4, param]
# events
def e_emit(i, token=True): return [0, (0x80 if token else 0) | i]
def e_start(i, tag=1): return [2 * 12 + 0, (tag << 2) | i]     # producer_op 2
def e_end(i, tag=1, failed=False): return [3 * 12 + 0, (0x40 if failed else 0) | (tag << 2) | i]
def e_tagged(i, tag=1): return [1 * 12 + 0, (tag << 2) | i]
def e_finish(i, failed=False): return [4 * 12 + 0, (0x40 if failed else 0) | i]
def e_more(i, n=2): return [5 * 12 + 0, (n << 2) | i]
def e_multi(i, what): return [3, (what << 2) | i]
def e_out(what): return [4, what]
def e_pause(): return [5, 1]
def e_resume(): return [5, 0]
def e_cancel(): return [6, 0]
def e_fire(i): return [7, i]
def e_fail(i): return [7, (2 << 3) | i]
def e_cancel_pend(i): return [7, (3 << 3) | i]
def e_take_result(): return [9, 0]
def e_stage(i, what): return [10, what | i]


PROCESS = {
    "array-collect": header(1, 0) + p_array(5, 0x15) + c_collect(),
    "array-map-collect": header(1, 1) + p_array(6, 0x3f) + q_map(0) + c_collect(),
    "map-waits": header(1, 1) + p_array(4, 0xf) + q_map(2) + c_collect() + e_fire(1) + e_fire(2) + e_fire(3),
    "map-fails": header(1, 1) + p_array(4, 0xf) + q_map(1) + c_collect(),
    "filter-batch": header(1, 2) + p_array(7, 0x55) + q_filter(0xaa) + q_batch(2) + c_collect(),
    "reduce": header(1, 0) + p_array(7, 0x7f) + c_reduce(0, True),
    "reduce-fails": header(1, 0) + p_array(7, 0x7f) + c_reduce(3),
    "first": header(1, 0) + p_array(5, 0x1f) + c_first(),
    "first-empty": header(1, 0) + p_array(0, 0) + c_first(),
    "to-multi": header(1, 0) + p_array(5, 0x1f) + c_to_multi(0) + e_fire(1) + e_fire(2) + e_out(4) + e_out(5),
    "to-multi-backpressure": header(1, 0) + p_user(6, 1) + c_to_multi(0) + e_fire(1) + e_fire(2) + e_fire(4),
    "multi-producer": header(1, 1) + p_multi() + q_map(0) + c_collect()
        + e_multi(0, 0) + e_multi(0, 4) + e_multi(0, 0) + e_multi(0, 5) + e_multi(0, 2),
    "multi-producer-cancel": header(1, 0) + p_multi() + c_collect() + e_multi(0, 0) + e_multi(0, 3),
    "user-producer": header(1, 0) + p_user(5, 1) + c_collect(),
    "user-producer-events": header(1, 0) + p_user(0, 0) + c_user(0, 0)
        + e_emit(0) + e_emit(0, False) + e_more(0) + e_finish(0),
    "groups": header(1, 0) + p_user(0, 0) + c_user(0, 2)
        + e_start(0, 1) + e_emit(0) + e_start(0, 2) + e_tagged(0, 2) + e_end(0, 2) + e_end(0, 1) + e_finish(0),
    "groups-failed-end": header(1, 0) + p_user(0, 0) + c_user(1, 2 | 8)
        + e_start(0, 3) + e_emit(0) + e_end(0, 3, True) + e_finish(0),
    "groups-batch": header(1, 1) + p_user(0, 0) + q_batch(2) + c_collect()
        + e_start(0, 1) + e_emit(0) + e_emit(0) + e_emit(0) + e_end(0, 1) + e_finish(0),
    "many-producers": header(3, 0) + p_array(3, 7) + p_user(2, 1) + p_multi() + c_collect()
        + e_multi(2, 0) + e_multi(2, 2),
    "many-producers-fail": header(2, 0) + p_user(0, 0) + p_user(0, 0) + c_collect()
        + e_emit(0) + e_emit(1) + e_finish(0, True) + e_emit(1),
    "paused-start": header(1, 0, paused=True) + p_array(3, 7) + c_collect() + e_resume() + e_pause() + e_resume(),
    "process-pause-resume": header(1, 0) + p_user(0, 0) + c_collect()
        + e_pause() + e_emit(0) + e_more(0, 3) + e_resume() + e_finish(0),
    "process-cancel": header(1, 1) + p_user(3, 0) + q_map(2) + c_collect() + e_cancel() + e_fire(1),
    "user-processor": header(1, 1) + p_array(6, 0x3f) + q_user(0, 1) + c_collect(),
    "user-processor-pauses": header(1, 1) + p_user(6, 1) + q_user(2, 1, resume=True) + c_collect()
        + e_stage(0, 0x80) + e_stage(0, 0x80),
    "user-processor-cancels": header(1, 1) + p_user(6, 1) + q_user(4, 1) + c_collect(),
    "user-processor-fails": header(1, 1) + p_array(6, 0x3f) + q_user(5, 1) + c_collect(),
    "user-consumer-autopause": header(1, 0) + p_user(6, 1) + c_user(0, 0, autopause=True)
        + e_stage(0, 0x80) + e_more(0),
    "user-consumer-finish-waits": header(1, 0) + p_array(2, 3) + c_user(0, 0x10) + e_fire(0),
    "stage-fail": header(1, 1) + p_user(0, 0) + q_user(0, 0) + c_collect() + e_emit(0) + e_stage(0, 0),
    "no-consumer": header(1, 0, no_consumer=True) + p_array(2, 3),
    "take-result": header(1, 0) + p_array(2, 3) + c_collect() + e_take_result(),
    "fail-alloc": header(1, 1) + p_user(0, 0) + q_map(0) + c_collect() + [11, 3] + e_emit(0) + e_more(0, 3),
}


# fuzz-async.c: opcodes (enum op), steps (enum step_kind), cleanups
# (enum fin_kind).
(A_NEW, A_NEW_MULTI, A_CORO, A_CORO2, A_FIRE, A_ERRBACK, A_CANCEL, A_PAUSE,
 A_UNPAUSE, A_REF, A_UNREF, A_EMIT, A_FINISH, A_FAIL_ALLOC, A_CONSUMER,
 A_SUCCEED) = range(16)
(ST_AWAIT, ST_TRY, ST_FOR, ST_RETURN, ST_FAIL, ST_FIRE, ST_CANCEL) = range(7)
(FIN_NOTHING, FIN_AWAIT_TRY, FIN_AWAIT, FIN_RETURN) = range(4)


def a_step(kind, x=0, flag=False, y=0, k=0):
    return [(0x80 if flag else 0) | kind, (y << 4) | x, k]
def a_program(steps, fin, finx, hold):
    return [(0x80 if hold else 0) | (fin << 3) | (len(steps) - 1), finx] + sum(steps, [])
def a_coro(s, steps, fin=FIN_NOTHING, finx=0, hold=False, discard=False):
    return [A_CORO, (0x80 if discard else 0) | s] + a_program(steps, fin, finx, hold)
def a_consumer(s, steps, multi=None, n=0, fail_mask=0, paused=False, fin=FIN_NOTHING, finx=0):
    pb = (0x80 | multi) if multi is not None else (fail_mask << 3) | n
    return [A_CONSUMER, (0x40 if paused else 0) | s, pb] + a_program(steps, fin, finx, False)
def a_op(op, s, failed=False): return [op, (0x80 if failed else 0) | s]


ASYNC = {
    "await-fire": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0)]) + a_op(A_FIRE, 0),
    "await-ready": a_op(A_SUCCEED, 0) + a_coro(1, [a_step(ST_AWAIT, 0), a_step(ST_RETURN)]),
    # A borrowed await (flag) of a slot's own deferred: fired, pending then
    # fired, freed unfired (the coroutine is dropped), cancelled.
    "await-borrowed-ready": a_op(A_SUCCEED, 0)
        + a_coro(1, [a_step(ST_AWAIT, 0, flag=True), a_step(ST_RETURN)]),
    "await-borrowed-pending": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0, flag=True)])
        + a_op(A_FIRE, 0),
    "await-borrowed-freed": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0, flag=True)], hold=True)
        + a_op(A_UNREF, 0),
    "await-borrowed-cancel": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0, flag=True)], hold=True)
        + a_op(A_CANCEL, 1),
    "try-handled": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_TRY, 0), a_step(ST_RETURN)])
        + a_op(A_ERRBACK, 0),
    "try-passed-on": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_TRY, 0, flag=True), a_step(ST_RETURN)])
        + a_op(A_ERRBACK, 0),
    "unhandled-finally-awaits": a_op(A_NEW, 0) + a_op(A_NEW, 2)
        + a_coro(1, [a_step(ST_AWAIT, 0)], fin=FIN_AWAIT_TRY, finx=2, hold=True)
        + a_op(A_ERRBACK, 0) + a_op(A_FIRE, 2),
    "cancel-handled-twice": a_op(A_NEW, 0) + a_op(A_NEW, 2)
        + a_coro(1, [a_step(ST_TRY, 0), a_step(ST_TRY, 2), a_step(ST_RETURN)])
        + a_op(A_CANCEL, 1) + a_op(A_CANCEL, 1),
    "cancel-unhandled": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0)], hold=True)
        + a_op(A_CANCEL, 1),
    "for-multi": a_op(A_NEW_MULTI, 0) + a_op(A_NEW, 2)
        + a_coro(1, [a_step(ST_FOR, 0, flag=True, y=2), a_step(ST_RETURN)])
        + a_op(A_EMIT, 0) + a_op(A_FIRE, 2) + a_op(A_EMIT, 0) + a_op(A_FINISH, 0),
    "for-break": a_op(A_NEW_MULTI, 0) + a_coro(1, [a_step(ST_FOR, 0, k=2), a_step(ST_FOR, 0)])
        + a_op(A_EMIT, 0) + a_op(A_EMIT, 0) + a_op(A_EMIT, 0) + a_op(A_FINISH, 0),
    "for-failed-row": a_op(A_NEW_MULTI, 0) + a_coro(1, [a_step(ST_FOR, 0)], hold=True)
        + a_op(A_EMIT, 0) + a_op(A_FINISH, 0, failed=True),
    "await-multi": a_op(A_NEW_MULTI, 0) + a_coro(1, [a_step(ST_AWAIT, 0)])
        + a_op(A_EMIT, 0) + a_op(A_FINISH, 0),
    "coro-awaits-coro": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0)])
        + a_coro(2, [a_step(ST_TRY, 1), a_step(ST_FAIL, 3)]) + a_op(A_FIRE, 0),
    "dropped": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0)], fin=FIN_AWAIT, finx=0, hold=True)
        + a_op(A_UNREF, 0),
    "discard": a_coro(0, [a_step(ST_AWAIT, 0)], hold=True, discard=True),
    "finally-returns": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_FAIL, 1)], fin=FIN_RETURN),
    "pause-coro": a_op(A_NEW, 0) + a_coro(1, [a_step(ST_AWAIT, 0)]) + a_op(A_PAUSE, 1)
        + a_op(A_FIRE, 0) + a_op(A_UNPAUSE, 1),
    "side-effects": a_op(A_NEW, 0) + a_op(A_NEW, 2) + a_op(A_NEW, 4)
        + a_coro(1, [a_step(ST_AWAIT, 0), a_step(ST_FIRE, 2), a_step(ST_CANCEL, 4)])
        + a_coro(3, [a_step(ST_AWAIT, 2), a_step(ST_AWAIT, 1)]) + a_op(A_FIRE, 0),
    "consumer-array": a_consumer(0, [a_step(ST_FOR, 0), a_step(ST_RETURN)], n=4),
    "consumer-array-failed": a_consumer(0, [a_step(ST_FOR, 0)], n=3, fail_mask=2),
    "consumer-multi": a_op(A_NEW_MULTI, 1) + a_op(A_NEW, 2)
        + a_consumer(0, [a_step(ST_FOR, 0, flag=True, y=2)], multi=1, paused=True)
        + a_op(A_EMIT, 1) + a_op(A_FIRE, 2) + a_op(A_EMIT, 1) + a_op(A_FINISH, 1),
    "consumer-cancel": a_op(A_NEW_MULTI, 1) + a_consumer(0, [a_step(ST_FOR, 0, k=3)], multi=1)
        + a_op(A_EMIT, 1) + a_op(A_CANCEL, 0),
    "fail-alloc": a_op(A_NEW, 0) + [A_FAIL_ALLOC, 0] + a_coro(1, [a_step(ST_AWAIT, 0)])
        + [A_FAIL_ALLOC, 1] + a_coro(2, [a_step(ST_TRY, 0)]) + [A_FAIL_ALLOC, 2]
        + a_op(A_CANCEL, 2) + a_op(A_FIRE, 0),
}


# fuzz-chain.c's opcodes (C_), callback actions (CA_, enum action) and
# entry kinds (CK_); t/twisted-diff.py uses them too.  Each operation
# names a slot (0-2) after its opcode.
(C_ADD, C_FIRE, C_ERRBACK, C_PAUSE, C_UNPAUSE, C_TAKE, C_NEW, C_CANCEL,
 C_CHAIN_TO) = range(9)
(CA_INC, CA_FAIL, CA_PASS, CA_ADD, CA_PAUSE, CA_BLINK, CA_FIRED, CA_WAIT, CA_FIRE, CA_UNPAUSE,
 CA_NONE) = range(11)
CK_CB, CK_EB, CK_BOTH, CK_PAIR = range(4)


def c_add(kind, act, x=0, act2=CA_NONE, x2=0, full=False, function=False, s=0, oom=False):
    flags = (1 if full else 0) | (2 if function else 0) | (4 if oom else 0)
    if kind == CK_PAIR:
        return [C_ADD, s, kind, act, x, act2, x2, flags]
    return [C_ADD, s, kind, act, x, flags]


def c_cbs(n, act=CA_INC, s=0): return sum((c_add(CK_CB, act, s=s) for _ in range(n)), [])
def c_fire(s, x=0): return [C_FIRE, s, x]
def c_errback(s, x=0): return [C_ERRBACK, s, x]
def c_pause(s): return [C_PAUSE, s]
def c_unpause(s): return [C_UNPAUSE, s]
def c_take(s): return [C_TAKE, s]
def c_new(s, x): return [C_NEW, s, x]
def c_cancel(s): return [C_CANCEL, s]
def c_chain_to(s, t): return [C_CHAIN_TO, s, t]


CHAIN = {
    "chain10": c_cbs(10) + c_fire(0) + c_take(0),
    "chain10-after": c_new(0, 1) + c_cbs(10) + c_take(0),
    "errback-after-callbacks": c_cbs(5) + c_add(CK_EB, CA_INC) + c_cbs(5) + c_errback(0, 3),
    "fail-then-recover": c_add(CK_CB, CA_FAIL, 4) + c_cbs(6) + c_add(CK_EB, CA_INC)
        + c_cbs(3) + c_fire(0, 1),
    "pair-null-halves": c_add(CK_PAIR, CA_NONE, 0, CA_INC) + c_add(CK_PAIR, CA_FAIL, 2, CA_NONE)
        + c_add(CK_PAIR, CA_INC, 0, CA_INC) + c_fire(0, 5),
    "pause-inside": c_cbs(3) + c_add(CK_CB, CA_PAUSE) + c_cbs(20) + c_fire(0)
        + c_cbs(4) + c_unpause(0) + c_take(0),
    "blink-inside": c_cbs(2) + c_add(CK_CB, CA_BLINK) + c_cbs(9) + c_fire(0),
    "add-inside": c_add(CK_CB, CA_ADD, 0x01) + c_add(CK_CB, CA_ADD, 0x42) + c_cbs(2)
        + c_add(CK_EB, CA_ADD, 0x85) + c_fire(0),
    "wait-pending": c_cbs(2) + c_add(CK_CB, CA_WAIT, 0) + c_cbs(12) + c_fire(0)
        + c_pause(0) + c_add(CK_BOTH, CA_INC) + c_cbs(2, s=1) + c_fire(1, 8)
        + c_cbs(2, s=1) + c_unpause(0),
    "wait-failed": c_add(CK_CB, CA_WAIT, 1) + c_add(CK_EB, CA_INC) + c_fire(0)
        + c_errback(2, 3),
    "wait-paused": c_pause(1) + c_fire(1, 4) + c_add(CK_CB, CA_WAIT) + c_fire(0)
        + c_cbs(2, s=1) + c_unpause(1),
    "wait-waiting": c_add(CK_CB, CA_WAIT, 0) + c_add(CK_CB, CA_WAIT, 0, s=1) + c_fire(1)
        + c_fire(0) + c_cbs(3) + c_fire(2, 7) + c_take(0),
    "wait-running": c_add(CK_CB, CA_FIRE, 0, s=1) + c_add(CK_CB, CA_WAIT, 0) + c_cbs(3, s=1)
        + c_fire(1),
    "fire-from-inside": c_add(CK_CB, CA_FIRE, 1) + c_add(CK_CB, CA_FIRE, 2, s=1)
        + c_add(CK_CB, CA_UNPAUSE, 0, s=2) + c_pause(0) + c_fire(0),
    "fired-returned": c_add(CK_CB, CA_FIRED) + c_add(CK_CB, CA_FAIL, 1) + c_add(CK_EB, CA_FIRED)
        + c_add(CK_EB, CA_INC) + c_fire(0, 2),
    "full-everything": sum((c_add(k, CA_INC, full=True) for k in (0, 1, 2, 0, 0, 2, 1)), [])
        + c_add(CK_PAIR, CA_FAIL, 1, CA_INC, full=True) + c_errback(0, 1) + c_new(0, 0)
        + c_cbs(7) + sum((c_add(CK_EB, CA_INC, full=True) for _ in range(9)), []),
    "function-form": sum((c_add(k % 3, CA_INC, function=True) for k in range(40)), [])
        + c_fire(0),
    "second-fire": c_fire(0, 1) + c_fire(0, 2) + c_errback(0, 3) + c_unpause(0),
    "take-then-add": c_fire(0, 4) + c_take(0) + c_cbs(3) + c_pause(0) + c_take(0)
        + c_cbs(2) + c_unpause(0),
    "cancel-pending": c_cbs(2) + c_add(CK_EB, CA_INC) + c_cancel(0) + c_fire(0, 1)
        + c_fire(0, 2),
    "cancel-waiting": c_add(CK_CB, CA_WAIT) + c_add(CK_EB, CA_INC) + c_cbs(4) + c_fire(0)
        + c_cancel(0) + c_fire(1, 1) + c_cancel(0),
    "drop-waiting": c_add(CK_CB, CA_WAIT) + c_fire(0) + c_new(0, 0) + c_cbs(2, s=1)
        + c_fire(1, 3),
    "chain-to": c_cbs(2) + c_chain_to(0, 1) + c_add(CK_EB, CA_INC) + c_cbs(2, s=1)
        + c_fire(0, 3) + c_chain_to(0, 0) + c_chain_to(1, 2) + c_add(CK_BOTH, CA_INC, s=1)
        + c_fire(2, 1) + c_chain_to(1, 2) + c_new(1, 0),
    "chain-to-cancelled": c_cancel(1) + c_chain_to(0, 1) + c_fire(0, 5) + c_take(0),
    "out-of-memory": c_cbs(3) + sum((c_add(k % 4, CA_INC, 1, CA_FAIL, 2, full=k % 2 == 0,
                                           oom=True) for k in range(24)), [])
        + c_fire(0) + c_pause(0) + sum((c_add(CK_EB, CA_INC, full=True, oom=True)
                                        for _ in range(20)), []) + c_unpause(0),
    "compacted": c_pause(0) + c_cbs(30) + c_fire(0) + c_unpause(0)
        + c_add(CK_CB, CA_PAUSE) + c_pause(0) + c_cbs(40) + c_unpause(0) + c_unpause(0),
}


def chain_random(seed, count):
    """Programs that build long chains of mixed entries on the three
    slots, then fire, pause, unpause, take, cancel and renew them, in
    random order."""
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        data = []
        for _ in range(rng.randint(20, 120)):
            s = rng.choice([0, 0, 0, 1, 1, 2])
            if rng.random() < 0.7:
                kind = rng.choice([CK_CB] * 6 + [CK_EB, CK_BOTH, CK_PAIR])
                act = rng.choice([CA_INC] * 10 + list(range(11)))
                data += c_add(kind, act, rng.randrange(256), rng.randrange(11),
                              rng.randrange(256), rng.random() < 0.2, rng.random() < 0.3, s,
                              rng.random() < 0.1)
            else:
                op = rng.choice([C_FIRE, C_ERRBACK, C_PAUSE, C_UNPAUSE, C_TAKE, C_NEW,
                                 C_UNPAUSE, C_FIRE, C_CANCEL, C_CHAIN_TO])
                data += [op, s] + ([rng.randrange(256)] if op in (C_FIRE, C_ERRBACK, C_NEW,
                                                              C_CHAIN_TO) else [])
        out["random-%02d" % i] = data
    return out


def random_inputs(seed, count, alphabet_max, length):
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        n = rng.randint(length // 2, length)
        out["random-%02d" % i] = [rng.randrange(alphabet_max) for _ in range(n)]
    return out


def crashes(binary, data):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(bytes(data))
        name = f.name
    try:
        r = subprocess.run([binary, name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=60)
        return r.returncode != 0
    except subprocess.TimeoutExpired:
        return True
    finally:
        os.unlink(name)


def main():
    args = sys.argv[1:]
    check = {}
    while args and args[0].startswith("--check-"):
        check[args[0][len("--check-"):]] = args[1]
        args = args[2:]
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = args[0] if args else os.path.join(here, "corpus")
    sets = {
        "core": dict(CORE, **random_inputs(1, 12, 256, 48)),
        "process": dict(PROCESS, **random_inputs(2, 12, 256, 40)),
        "async": dict(ASYNC, **random_inputs(3, 8, 256, 48)),
        "chain": dict(CHAIN, **chain_random(5, 16)),
    }
    for harness, inputs in sets.items():
        for name, data in sorted(inputs.items()):
            dest = os.path.join(outdir, harness)
            if harness in check and crashes(check[harness], data):
                dest = os.path.join(here, "pending", harness)
                print("crashes now, kept in %s: %s" % (dest, name))
            os.makedirs(dest, exist_ok=True)
            with open(os.path.join(dest, name), "wb") as f:
                f.write(bytes(b & 0xff for b in data))


if __name__ == "__main__":
    main()
