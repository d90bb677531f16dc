// node-postgres named queries ({name, text, values}) through sluice in transaction pooling
// (test/integration/test_ps_drivers.py). node-postgres sends Parse for a name only the first
// time a connection uses it and Bind alone afterwards, trusting the statement to stay on
// "its" server: the pooler's prepared-statement cache must make that true.
//
// usage: node ps_named_queries.js PORT CLIENTS TRANSACTIONS_PER_CLIENT
// prints one JSON line {"transactions": N, "queries": M} and exits 0, or exits 1 with the error.
'use strict';

const { Client } = require('pg');

const [port, nClients, nTx] = process.argv.slice(2).map(Number);

function check(what, got, want) {
  if (got !== want) {
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

async function worker(w) {
  const c = new Client({
    host: '127.0.0.1', port, user: 'md5user', password: 'md5pass', database: 'appdb',
  });
  await c.connect();
  let tx = 0;
  let queries = 0;
  try {
    for (let i = 0; i < nTx; i++) {
      await c.query('BEGIN');
      const a = await c.query({
        name: 'q1', text: 'SELECT $1::int + $2::int AS node_add', values: [i, w],
      });
      check('q1', a.rows[0].node_add, i + w);
      const k = i % 3;
      const b = await c.query({
        name: `q2_${k}`, text: `SELECT $1::text || '-${k}' AS node_cat`, values: [`w${w}`],
      });
      check('q2', b.rows[0].node_cat, `w${w}-${k}`);
      const g = await c.query({
        name: 'q3',
        text: 'SELECT count(*)::int AS node_n FROM generate_series(1, $1::int)',
        values: [i % 7 + 1],
      });
      check('q3', g.rows[0].node_n, i % 7 + 1);
      await c.query('COMMIT');
      // A named query outside any transaction block (autocommit).
      const d = await c.query({ name: 'q4', text: 'SELECT $1::int * 2 AS node_dbl', values: [i] });
      check('q4', d.rows[0].node_dbl, 2 * i);
      queries += 4;
      tx++;
    }
  } finally {
    await c.end();
  }
  return { tx, queries };
}

(async () => {
  const results = await Promise.all(Array.from({ length: nClients }, (_, w) => worker(w)));
  const transactions = results.reduce((s, r) => s + r.tx, 0);
  const queries = results.reduce((s, r) => s + r.queries, 0);
  console.log(JSON.stringify({ transactions, queries }));
})().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
