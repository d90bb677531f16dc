// postgres.js (the "postgres" package) through sluice in transaction pooling
// (test/integration/test_ps_drivers.py). What sets this driver apart:
// * it pipelines: up to 100 queries of one connection are on the wire before the first
//   answer (each its own Parse/Bind/Execute/Sync batch);
// * a query with parameters that it has not prepared yet is sent as Parse + Describe +
//   Flush, with no Sync: the server stays inside the implicit transaction until the
//   driver, having read the parameter types, sends Bind + Execute + Sync;
// * a cursor is Bind + Execute(10 rows) written with no Sync and no Flush until the last
//   batch; COPY streams its rows in many CopyData messages;
// * prepare: true (the default) names every statement (random prefix + counter) and
//   binds it alone afterwards; prepare: false uses the unnamed statement, which lives
//   only until the next Parse on that server.
//
// usage: node postgres_js.js PORT WORKERS ROUNDS PREPARE(0|1)
// prints one JSON line {"queries": N, "transactions": M} and exits 0, or exits 1 with the
// error.
'use strict';

const postgres = require('postgres');

const [port, nWorkers, nRounds, prepare] = process.argv.slice(2).map(Number);

function check(what, got, want) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

async function worker(w) {
  const sql = postgres({
    host: '127.0.0.1', port, user: 'md5user', password: 'md5pass', database: 'appdb',
    max: 3, prepare: prepare === 1, idle_timeout: 0, connect_timeout: 20, onnotice: () => {},
  });
  let queries = 0;
  let transactions = 0;
  try {
    for (let r = 0; r < nRounds; r++) {
      // 40 queries at once over 3 connections: pipelined, each its own transaction.
      const batch = [];
      for (let i = 0; i < 40; i++) {
        const v = r * 1000 + i;
        switch (i % 4) {
          case 0:
            batch.push(sql`SELECT ${v}::int + ${w}::int AS pjs_add`
              .then((rows) => check('add', rows[0].pjs_add, v + w)));
            break;
          case 1:
            batch.push(sql`SELECT ${'w' + w}::text || ${'-' + (i % 3)}::text AS pjs_cat`
              .then((rows) => check('cat', rows[0].pjs_cat, `w${w}-${i % 3}`)));
            break;
          case 2:
            batch.push(sql`SELECT count(*)::int AS pjs_n FROM generate_series(1, ${i % 9 + 1}::int)`
              .then((rows) => check('count', rows[0].pjs_n, i % 9 + 1)));
            break;
          default:
            // No parameters: Parse + Describe + Bind + Execute + Sync in one write.
            batch.push(sql`SELECT 'pjs' || 7 AS pjs_const`
              .then((rows) => check('const', rows[0].pjs_const, 'pjs7')));
        }
      }
      await Promise.all(batch);
      queries += batch.length;

      // A transaction: BEGIN, statements pipelined inside it, COMMIT, all on one server.
      const res = await sql.begin(async (tx) => {
        const [a] = await tx`SELECT ${r}::int * 3 AS pjs_tri`;
        const pid1 = (await tx`SELECT pg_backend_pid() AS pid`)[0].pid;
        const more = await Promise.all([
          tx`SELECT ${w}::int - 1 AS pjs_sub`,
          tx`SELECT pg_backend_pid() AS pid`,
          tx`SELECT txid_current_if_assigned() IS NULL AS pjs_noxid`,
        ]);
        return [a.pjs_tri, pid1 === more[1][0].pid, more[0][0].pjs_sub, more[2][0].pjs_noxid];
      });
      check('transaction', res, [3 * r, true, w - 1, true]);
      queries += 5;
      transactions++;

      // A failed statement in a transaction rolls it back and the next one is clean.
      let failed = false;
      try {
        await sql.begin(async (tx) => {
          await tx`SELECT ${r}::int AS pjs_ok`;
          await tx`SELECT 1 / ${0}::int AS pjs_div`;
        });
      } catch (e) {
        if (e.code !== '22012') throw e;
        failed = true;
      }
      check('division by zero raised', failed, true);
      const [s] = await sql`SELECT ${'after'}::text AS pjs_after`;
      check('after failure', s.pjs_after, 'after');
      queries += 3;

      // A cursor: Bind + Execute of 10 rows at a time, no Sync until the last batch (the
      // server stays with the client through the gaps).
      let batches = 0;
      let sum = 0;
      await sql`SELECT g AS v FROM generate_series(1, ${25 + r}::int) g`.cursor(10, (rows) => {
        batches++;
        for (const row of rows) sum += row.v;
      });
      check('cursor', [batches, sum], [Math.ceil((25 + r) / 10), ((25 + r) * (26 + r)) / 2]);
      queries++;

      // A savepoint rolled back inside a transaction that then goes on and commits.
      const sp = await sql.begin(async (tx) => {
        let code = null;
        try {
          await tx.savepoint(async (s) => { await s`SELECT 1 / ${0}::int AS pjs_div`; });
        } catch (e) {
          code = e.code;
        }
        const [x] = await tx`SELECT ${r}::int + 100 AS pjs_x`;
        return [code, x.pjs_x];
      });
      check('savepoint', sp, ['22012', r + 100]);
      transactions++;
      queries += 4;

      // COPY in (streamed in many CopyData) and out, on this worker's own rows.
      const base = (w * 1000 + r) * 1000;
      const copyIn = await sql`COPY pjs_copy (a, b) FROM STDIN`.writable();
      for (let i = 0; i < 200; i++) copyIn.write(`${base + i}\tpjs row ${i}\n`);
      await new Promise((resolve, reject) => {
        copyIn.on('finish', resolve);
        copyIn.on('error', reject);
        copyIn.end();
      });
      const [c] = await sql`SELECT count(*)::int AS n FROM pjs_copy
                            WHERE a >= ${base}::int AND a < ${base + 1000}::int`;
      check('copy in', c.n, 200);
      // (COPY takes no parameters: the bounds are written into the text.)
      const copyOut = await sql.unsafe(`COPY (SELECT a, b FROM pjs_copy WHERE a >= ${base}
                                         AND a < ${base + 1000} ORDER BY a) TO STDOUT`)
        .readable();
      let text = '';
      for await (const chunk of copyOut) text += chunk.toString();
      const lines = text.split('\n').filter((l) => l);
      check('copy out', [lines.length, lines[199]], [200, `${base + 199}\tpjs row 199`]);
      queries += 3;

      // Simple protocol, several statements in one Query.
      const multi = await sql.unsafe(`SELECT ${w} AS a; SELECT 'x' || ${r} AS b`);
      check('multi', [multi[0][0].a, multi[1][0].b], [w, `x${r}`]);
      queries += 2;
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
  return { queries, transactions };
}

(async () => {
  const results = await Promise.all(Array.from({ length: nWorkers }, (_, w) => worker(w)));
  console.log(JSON.stringify({
    queries: results.reduce((s, r) => s + r.queries, 0),
    transactions: results.reduce((s, r) => s + r.transactions, 0),
  }));
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
