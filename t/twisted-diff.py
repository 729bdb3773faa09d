#!/usr/bin/env python3
"""t/twisted-diff.py: run fuzz/fuzz-chain.c's programs on Twisted's Deferred.

    python3 t/twisted-diff.py REGRESS_CHAIN [COUNT [SEED]]

Writes COUNT (default 400) random programs in fuzz-chain.c's byte code,
runs each with REGRESS_CHAIN (fuzz/regress-chain, with FUZZ_TRACE=1: it
prints every call of a callback and, after every operation, the result of
each deferred that has one) and with an interpreter of the same byte code
written here on twisted.internet.defer.Deferred, and compares the two
traces line by line.  fuzz-chain.c checks the library against a model of
docs/semantics.md; this checks the semantics against Twisted itself.

The programs keep to what both define the same way (docs/semantics.md,
section 17, lists where they differ on purpose): no callback pauses its
own deferred (Twisted runs the rest of the pass past such a pause; here
nothing runs while the count is above zero), no unpause below zero
reaches Twisted (here it is -EINVAL), no slot is renewed (so that no
chain outlives its slot), and no allocation fails.  A program that
pauses a deferred while it waits is left out (counted): when the one it
waits on reaches its continuation, Twisted's runner returns and leaves
the rest of that inner chain unrun until something else runs it; here
the inner chain goes on.  So is one whose callback returns a deferred in
the middle of its run (a callback of it running, or its chain suspended
on the runner's stack): Twisted takes the value it holds at that moment
(which then goes on both ways); here it has no result until its chain
has run to its end, and the outer waits for that final one.  Exits 77 (skipped)
without Twisted, 1 on the first difference, printing the program and
both traces.
"""
import importlib.util
import os
import random
import subprocess
import sys
import tempfile

try:
    from twisted.internet import defer
    from twisted.logger import globalLogBeginner
    from twisted.python.failure import Failure
except ImportError:
    print("twisted-diff: SKIP: no Twisted (python3-twisted)")
    sys.exit(77)

# The failures left unhandled at the end of a program are expected (both
# sides report them): Twisted's log of them is not wanted here.
globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)

NSLOTS = 3
MAX_OPS = 600
NESTED_ADDS = 64
SIDE_EFFECTS = 48
EALREADY, ECANCELED, EINVAL = 114, 125, 22

# fuzz-chain.c's byte code as fuzz/gen-corpus.py names it: the opcodes
# (C_*), the callback actions (CA_*), the entry kinds (CK_*) and c_add().
_spec = importlib.util.spec_from_file_location(
    "gen_corpus", os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "fuzz",
                               "gen-corpus.py"))
gen_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_corpus)
globals().update({name: getattr(gen_corpus, name) for name in dir(gen_corpus)
                  if name.startswith(("C_", "CA_", "CK_"))})
CA_NACTIONS = CA_NONE


class Code(Exception):
    """A failure of a code: the system domain's, or -ECANCELED/-EALREADY."""

    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


def mval(v):
    """A result as (type, value), the harness's: 0 empty, 1 integer, 2 failure."""
    if v is None:
        return (0, 0)
    if isinstance(v, Failure):
        if v.check(defer.CancelledError):
            return (2, -ECANCELED)
        if v.check(defer.AlreadyCalledError):
            return (2, -EALREADY)
        return (2, v.value.code)
    if isinstance(v, int):
        return (1, v)
    raise AssertionError("a result the harness did not make: %r" % (v,))


def fmt(m):
    return "(%d, %d)" % m


class Reader:
    def __init__(self, data):
        self.data, self.i = data, 0

    def more(self):
        return self.i < len(self.data)

    def byte(self):
        if self.i >= len(self.data):
            return 0
        b = self.data[self.i]
        self.i += 1
        return b


def nested_entry(x):
    kind = x & 3
    h0 = ((x >> 2) % CA_NACTIONS, (x * 7 + 3) & 0xff)
    h1 = ((x >> 5) % (CA_NACTIONS + 1), (x * 13 + 1) & 0xff)
    return kind, [h0, h1]


def wait_target(s, x):
    if s == NSLOTS - 1:
        return -1
    j = s + 1 + (x & 1)
    return j if j < NSLOTS else NSLOTS - 1


def has_fn(kind, h):
    return h[0][0] != CA_NONE or (kind == CK_PAIR and h[1][0] != CA_NONE)


class Run:
    """One program on Twisted; out collects the trace lines."""

    def __init__(self):
        self.out = []
        self.slot = [defer.Deferred() for _ in range(NSLOTS)]
        self.pauses = [0] * NSLOTS  # the user's pause counts
        self.next_id = [0] * NSLOTS
        self.adds_left = NESTED_ADDS
        self.side_left = SIDE_EFFECTS
        self.incomparable = False

    def fire(self, s, failed, x):
        d = self.slot[s]
        try:
            if failed:
                d.errback(Failure(Code(x % 20 + 1)))
            else:
                d.callback(x)
        except defer.AlreadyCalledError:
            return -EALREADY
        return 0

    def half(self, s, ident, k, h):
        def call(v):
            m = mval(v)
            self.out.append("call slot %d entry %d half %d on %s" % (s, ident, k, fmt(m)))
            act, x = h
            if act == CA_INC or (act == CA_WAIT and wait_target(s, x) < 0):
                return m[1] + 1 if m[0] == 1 else (1000 + m[1] if m[0] == 2 else 1)
            if act == CA_FAIL:
                return Failure(Code(x % 20 + 1))
            if act == CA_PASS:
                return v
            if act == CA_ADD:
                if self.adds_left > 0:
                    self.adds_left -= 1
                    kind, hh = nested_entry(x)
                    self.add(s, kind, hh)
                return v
            if act == CA_FIRED:
                if m[0] == 2:
                    return defer.fail(Failure(Code(m[1] + 50)))
                return defer.succeed(m[1] + 10 if m[0] == 1 else 10)
            if act == CA_WAIT:
                inner = self.slot[wait_target(s, x)]
                if inner._runningCallbacks or (inner.called and inner.callbacks and
                                               not inner.paused):
                    # A deferred in the middle of its run (a callback of it
                    # runs, or it waits on the runner's stack while an
                    # outer one runs): Twisted takes the value it holds
                    # now, which then goes on both ways; here its chain
                    # has not run to its end, it has no result yet, and
                    # the outer waits for its final one.  Not comparable.
                    self.incomparable = True
                return inner
            if act == CA_FIRE:
                if self.side_left > 0:
                    self.side_left -= 1
                    self.fire(x % NSLOTS, x & 4, x)
                return v
            if act == CA_UNPAUSE:
                if self.side_left > 0:
                    self.side_left -= 1
                    self.unpause(x % NSLOTS)
                return v
            # A callback that pauses its own deferred (an entry a nested
            # add made): Twisted runs on past it.  Not comparable.
            self.incomparable = True
            return v
        return call

    def add(self, s, kind, h):
        if not has_fn(kind, h):
            return
        ident = self.next_id[s]
        self.next_id[s] += 1
        fns = []
        for k in range(2 if kind == CK_PAIR else 1):
            fns.append(None if h[k][0] == CA_NONE else self.half(s, ident, k, h[k]))
        d = self.slot[s]
        if kind == CK_CB:
            d.addCallback(fns[0])
        elif kind == CK_EB:
            d.addErrback(fns[0])
        elif kind == CK_BOTH:
            d.addBoth(fns[0])
        else:
            d.addCallbacks(fns[0] or (lambda v: v), fns[1] or (lambda v: v))

    def unpause(self, s):
        if self.pauses[s] == 0:
            return -EINVAL
        self.pauses[s] -= 1
        self.slot[s].unpause()
        return 0

    def has_result(self, s):
        d = self.slot[s]
        # A deferred that waits holds the one it waits on as its result
        # (and is paused for it).
        return (d.called and not d.paused and not isinstance(d.result, defer.Deferred)
                and not d.callbacks and not d._runningCallbacks)

    def results(self):
        for s in range(NSLOTS):
            if self.has_result(s):
                self.out.append("result slot %d %s" % (s, fmt(mval(self.slot[s].result))))

    def run(self, data):
        r = Reader(data)
        ops = 0
        while r.more() and ops < MAX_OPS:
            ops += 1
            op = r.byte() % 9
            s = r.byte() % NSLOTS
            if op == C_ADD:
                kind = r.byte() & 3
                h = [(r.byte() % (CA_NACTIONS + 1), r.byte()), (CA_NONE, 0)]
                if kind == CK_PAIR:
                    h[1] = (r.byte() % (CA_NACTIONS + 1), r.byte())
                r.byte()  # flags: the way of the add, the same here
                self.add(s, kind, h)
            elif op in (C_FIRE, C_ERRBACK):
                self.fire(s, op == C_ERRBACK, r.byte())
            elif op == C_PAUSE:
                if isinstance(self.slot[s].result if self.slot[s].called else None,
                              defer.Deferred):
                    # A pause of a deferred that waits: when the one it
                    # waits on reaches its continuation, Twisted stops that
                    # inner chain for good (until something else runs it);
                    # here the inner goes on.  Not comparable.
                    return None
                self.pauses[s] += 1
                self.slot[s].pause()
            elif op == C_UNPAUSE:
                self.unpause(s)
            elif op == C_TAKE:
                d = self.slot[s]
                if d.called and not isinstance(d.result, defer.Deferred):
                    d.result = None  # taken (a failure so handled)
            elif op == C_NEW:
                raise AssertionError("a slot renewed: not in these programs")
            elif op == C_CHAIN_TO:
                t = r.byte() % NSLOTS
                if t <= s:
                    continue
                self.slot[s].chainDeferred(self.slot[t])
            else:
                self.slot[s].cancel()
            self.results()
        return None if self.incomparable else self.out


def program(rng):
    """A random program of the operations both sides define alike."""
    data = []
    acts = [CA_INC] * 8 + [CA_FAIL, CA_PASS, CA_ADD, CA_FIRED, CA_WAIT, CA_WAIT, CA_FIRE,
                            CA_UNPAUSE, CA_NONE]
    for _ in range(rng.randint(10, 80)):
        s = rng.choice([0, 0, 1, 1, 2])
        if rng.random() < 0.65:
            kind = rng.choice([CK_CB] * 4 + [CK_EB, CK_BOTH, CK_PAIR])
            # A nested add's entry is made from its argument: keep its
            # actions among these too (bits 2-4 and 5-7 of x).
            def arg(act):
                if act != CA_ADD:
                    return rng.randrange(256)
                while True:
                    x = rng.randrange(256)
                    if (x >> 2) % CA_NACTIONS not in (CA_PAUSE, CA_BLINK) and \
                            (x >> 5) % (CA_NACTIONS + 1) not in (CA_PAUSE, CA_BLINK):
                        return x
            a1, a2 = rng.choice(acts), rng.choice(acts)
            x1 = arg(a1)
            x2 = arg(a2) if kind == CK_PAIR else 0
            flags = rng.randrange(4)
            data += gen_corpus.c_add(kind, a1, x1, a2, x2, flags & 1, flags & 2, s)
        else:
            op = rng.choice([C_FIRE, C_FIRE, C_ERRBACK, C_PAUSE, C_UNPAUSE, C_TAKE, C_CANCEL,
                             C_CHAIN_TO])
            data += [op, s]
            if op in (C_FIRE, C_ERRBACK, C_CHAIN_TO):
                data += [rng.randrange(256)]
    return data


def library_trace(binary, data):
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(bytes(data))
        name = f.name
    try:
        env = dict(os.environ, FUZZ_TRACE="1")
        p = subprocess.run([binary, name], capture_output=True, text=True, env=env, timeout=60)
    finally:
        os.unlink(name)
    if p.returncode != 0:
        sys.stdout.write(p.stdout + p.stderr)
        raise SystemExit("twisted-diff: %s failed on the program" % binary)
    lines = []
    for line in p.stderr.splitlines():
        line = line.strip()
        if line.startswith("trace:"):
            line = line[len("trace:"):].strip()
            if line.startswith("call ") or line.startswith("result "):
                lines.append(line)
    return lines


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 400
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    rng = random.Random(seed)
    calls = skipped = 0
    for i in range(count):
        data = program(rng)
        theirs = Run().run(data)
        if theirs is None:
            skipped += 1
            continue
        ours = library_trace(binary, data)
        if ours != theirs:
            print("twisted-diff: program %d differs: %s" % (i, data))
            for k in range(max(len(ours), len(theirs))):
                a = ours[k] if k < len(ours) else "-"
                b = theirs[k] if k < len(theirs) else "-"
                print("%s %-44s %s" % ("  " if a == b else "!!", a, b))
            return 1
        calls += len(ours)
    print("twisted-diff: %d programs (%d more left out: a pause of a deferred that waits, "
          "a wait on one in the middle of its run, a pause from a callback), %d calls and "
          "results, the same on Twisted" % (count - skipped, skipped, calls))
    if skipped * 2 > count:
        print("twisted-diff: too many programs left out")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
