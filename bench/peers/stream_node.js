'use strict';
/*
 * stream_node.js: the Node.js object-mode streams peer of the stream
 * workload of bench/deferred-bench.c.
 *
 *   stream  Readable.from(array of 0 .. N-1) -> Transform x * 2 ->
 *           Transform filter x % 3 != 0 -> Transform x + 1 -> Writable sum,
 *           all in objectMode, joined with stream.pipeline; ns per row.
 *           As on libdeferred's side, building the pipeline is timed and
 *           the input array is made once beforehand; the sum is checked.
 *
 * It prints one "name<TAB>ns_per_row" line.  The workload runs once untimed
 * (a tenth of the size) to warm up the JIT, then RUNS times; the median is
 * printed.  A wrong result exits with status 1.
 * Usage: node stream_node.js [--quick]   (--quick: small sizes, one run)
 */

const { Readable, Transform, Writable, pipeline } = require('stream');

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 5;
const ROWS = quick ? 20000 : 1000000;

function fail(what) {
  process.stderr.write(`stream_node.js: wrong result: ${what}\n`);
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
  return new Promise((resolve, reject) => {
    let sum = 0;
    const t0 = process.hrtime.bigint();
    pipeline(
      Readable.from(items),
      new Transform({
        objectMode: true,
        transform(x, enc, cb) {
          cb(null, x * 2);
        },
      }),
      new Transform({
        objectMode: true,
        transform(x, enc, cb) {
          if (x % 3 !== 0) cb(null, x);
          else cb();
        },
      }),
      new Transform({
        objectMode: true,
        transform(x, enc, cb) {
          cb(null, x + 1);
        },
      }),
      new Writable({
        objectMode: true,
        write(x, enc, cb) {
          sum += x;
          cb();
        },
      }),
      (err) => {
        if (err) return reject(err);
        const t1 = process.hrtime.bigint();
        if (sum !== expected(items.length))
          fail(`stream sum ${sum}, expected ${expected(items.length)}`);
        resolve(Number(t1 - t0) / items.length);
      },
    );
  });
}

async function main() {
  await run(input(Math.max(1, Math.floor(ROWS / 10))));
  const items = input(ROWS);
  const ns = [];
  for (let i = 0; i < RUNS; i++) ns.push(await run(items));
  process.stdout.write(`stream\t${median(ns).toFixed(1)}\n`);
}

main().catch((e) => {
  process.stderr.write(`stream_node.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
