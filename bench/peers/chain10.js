'use strict';
/*
 * chain10.js: the Node.js peer of bench/deferred-bench.c, on V8's Promise.
 *
 * It runs the same workloads as libdeferred's benchmark and prints one
 * "name<TAB>ns_per_op" line for each on standard output:
 *
 *   chain10  new Promise with its resolve captured, 10 x .then(x => x + 1),
 *            resolve(0), read the result; ns per chain.  Chains are made in
 *            batches of 1,000 and the end of each batch is awaited, so the
 *            microtask flushing that runs the callbacks is inside the timing.
 *            The result is read by the tenth callback (it adds to a sum that
 *            is checked), so no extra .then() is paid for it.
 *   gather   N pending promises, Promise.all over them, each resolved in
 *            turn, the array awaited and summed; ns per element.
 *
 * Every workload runs once untimed to warm up the JIT, then RUNS times; the
 * median is printed.  A wrong result exits with status 1.
 * Usage: node chain10.js [--quick]   (--quick: small sizes, one run)
 */

const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 7;
const CHAIN_OPS = quick ? 2000 : 200000;
const BATCH = 1000;
const GATHER_N = quick ? 1000 : 100000;

const inc = (x) => x + 1;
let sum = 0;
const incAndRead = (x) => {
  const y = x + 1;
  sum += y;
  return y;
};

function fail(what) {
  process.stderr.write(`chain10.js: wrong result: ${what}\n`);
  process.exit(1);
}

function median(v) {
  const s = v.slice().sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

async function chain10(ops) {
  sum = 0;
  const t0 = process.hrtime.bigint();
  for (let done = 0; done < ops; done += BATCH) {
    const n = Math.min(BATCH, ops - done);
    let last;
    for (let i = 0; i < n; i++) {
      let resolve;
      const p = new Promise((r) => {
        resolve = r;
      });
      let q = p;
      for (let k = 0; k < 9; k++) q = q.then(inc);
      q = q.then(incAndRead);
      resolve(0);
      last = q;
    }
    // Every chain of the batch advances one step per round of the microtask
    // queue, in the order they were made: the last one ends last.
    await last;
  }
  const t1 = process.hrtime.bigint();
  if (sum !== 10 * ops) fail(`chain10 sum ${sum}, expected ${10 * ops}`);
  return Number(t1 - t0) / ops;
}

async function gather(n) {
  const t0 = process.hrtime.bigint();
  const resolvers = new Array(n);
  const promises = new Array(n);
  for (let i = 0; i < n; i++) {
    promises[i] = new Promise((r) => {
      resolvers[i] = r;
    });
  }
  const all = Promise.all(promises);
  for (let i = 0; i < n; i++) resolvers[i](i);
  const values = await all;
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i];
  const t1 = process.hrtime.bigint();
  if (s !== (n * (n - 1)) / 2) fail(`gather sum ${s}, expected ${(n * (n - 1)) / 2}`);
  return Number(t1 - t0) / n;
}

async function measure(fn, size) {
  await fn(Math.max(1, Math.floor(size / 10)));
  const ns = [];
  for (let i = 0; i < RUNS; i++) ns.push(await fn(size));
  return median(ns);
}

async function main() {
  const chain = await measure(chain10, CHAIN_OPS);
  process.stdout.write(`chain10\t${chain.toFixed(1)}\n`);
  const g = await measure(gather, GATHER_N);
  process.stdout.write(`gather\t${g.toFixed(1)}\n`);
}

main().catch((e) => {
  process.stderr.write(`chain10.js: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
