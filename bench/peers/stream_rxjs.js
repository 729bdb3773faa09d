'use strict';
/*
 * stream_rxjs.js: the RxJS peer of the stream workload of
 * bench/deferred-bench.c.
 *
 *   stream  from(array of 0 .. N-1).pipe(map(x => x * 2),
 *           filter(x => x % 3 !== 0), map(x => x + 1),
 *           reduce((acc, x) => acc + x, 0)), subscribed; ns per row.
 *           RxJS runs it synchronously inside subscribe.  Building the
 *           pipeline is timed, the input array is made once beforehand;
 *           the sum is checked.
 *
 * RxJS is an npm package, not part of Node: install it with
 * "npm install" in bench/peers (package.json lists it; node_modules is not
 * committed).  Without it the script prints "skip<TAB>reason" and exits 0,
 * and the benchmark says the peer did not run.
 *
 * It prints one "name<TAB>ns_per_row" line.  The workload runs once untimed
 * (a tenth of the size) to warm up the JIT, then RUNS times; the median is
 * printed.  A wrong result exits with status 1.
 * Usage: node stream_rxjs.js [--quick]   (--quick: small sizes, one run)
 */

let rx;
try {
  rx = require('rxjs');
} catch (e) {
  process.stdout.write(
    'skip\trxjs is not installed (cd bench/peers && npm install)\n',
  );
  process.exit(0);
}
/* RxJS 7 exports the operators from 'rxjs'; older ones from
 * 'rxjs/operators'. */
const ops = rx.map ? rx : require('rxjs/operators');
const { from } = rx;
const { map, filter, reduce } = ops;

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 5;
const ROWS = quick ? 20000 : 1000000;

function fail(what) {
  process.stderr.write(`stream_rxjs.js: wrong result: ${what}\n`);
  process.exit(1);
}

function median(v) {
  const s = v.slice().sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* The sum of 2x + 1 over x = 0 .. n - 1 with x % 3 != 0 (as in the C). */
function expected(n) {
  const m = Math.floor((n + 2) / 3);
  return n * n - 3 * m * (m - 1) - m;
}

function input(n) {
  const a = new Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

function run(items) {
  let sum = -1;
  const t0 = process.hrtime.bigint();
  from(items)
    .pipe(
      map((x) => x * 2),
      filter((x) => x % 3 !== 0),
      map((x) => x + 1),
      reduce((acc, x) => acc + x, 0),
    )
    .subscribe((s) => {
      sum = s;
    });
  const t1 = process.hrtime.bigint();
  if (sum !== expected(items.length))
    fail(`stream sum ${sum}, expected ${expected(items.length)}`);
  return Number(t1 - t0) / items.length;
}

function main() {
  run(input(Math.max(1, Math.floor(ROWS / 10))));
  const items = input(ROWS);
  const ns = [];
  for (let i = 0; i < RUNS; i++) ns.push(run(items));
  process.stdout.write(`stream\t${median(ns).toFixed(1)}\n`);
}

main();
