"""twisted_bench.py: the Twisted peer of bench/deferred-bench.c.

It runs the same workloads as libdeferred's benchmark on Twisted's Deferred
and prints one "name<TAB>ns_per_op" line for each on standard output:

  chain10  Deferred(), 10 x addCallback(x + 1), callback(0), read .result;
           ns per chain.
  gather   N pending Deferreds, gatherResults over them, each fired in
           turn, the list summed; ns per element.

There is no stream figure: Twisted has no stream pipeline to compare
deferred_process with (its IProducer/IConsumer pair moves bytes between
transports, with no map, filter or reduce), so the stream workload is
compared with Node's object-mode streams and RxJS only.

Every workload runs once untimed to warm up, then RUNS times; the median is
printed.  A wrong result exits with status 1.
Usage: /usr/bin/python3 twisted_bench.py [--quick]  (--quick: small sizes)
"""

import statistics
import sys
import time

from twisted.internet.defer import Deferred, gatherResults

QUICK = "--quick" in sys.argv[1:]
RUNS = 1 if QUICK else 5
CHAIN_OPS = 1000 if QUICK else 20000
GATHER_N = 1000 if QUICK else 100000
GATHER_RUNS = 1 if QUICK else 3


def inc(x):
    return x + 1


def fail(what):
    sys.stderr.write("twisted_bench.py: wrong result: %s\n" % what)
    sys.exit(1)


def chain10(ops):
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(ops):
        d = Deferred()
        for _ in range(10):
            d.addCallback(inc)
        d.callback(0)
        if d.result != 10:
            fail("chain10 gave %r, expected 10" % (d.result,))
    t1 = clock()
    return (t1 - t0) / ops


def gather(n):
    clock = time.perf_counter_ns
    t0 = clock()
    ds = [Deferred() for _ in range(n)]
    out = []
    gatherResults(ds).addCallback(out.append)
    for i, d in enumerate(ds):
        d.callback(i)
    total = sum(out[0])
    t1 = clock()
    if total != n * (n - 1) // 2:
        fail("gather sum %d, expected %d" % (total, n * (n - 1) // 2))
    return (t1 - t0) / n


def measure(fn, size, runs):
    fn(max(1, size // 10))
    return statistics.median(fn(size) for _ in range(runs))


def main():
    sys.stdout.write("chain10\t%.1f\n" % measure(chain10, CHAIN_OPS, RUNS))
    sys.stdout.flush()
    sys.stdout.write("gather\t%.1f\n" % measure(gather, GATHER_N, GATHER_RUNS))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
