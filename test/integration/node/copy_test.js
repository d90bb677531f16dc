// node-postgres + pg-copy-streams through the pooler (driven by test/integration/test_drivers.py).
//
//   node copy_test.js <host> <port> <user> <password> <database> <table> <rows>
//
// On one connection: COPY <rows> rows in (copyFrom stream), COPY them out (copyTo stream), a
// division by zero, then 50 transactions with parameters. A second connection holds a
// transaction open during every other one of those, so that in transaction mode the first
// connection keeps changing servers. Prints one JSON object on stdout; the test asserts on it.
'use strict';

const { pipeline } = require('node:stream/promises');
const { Readable, Writable } = require('node:stream');
const { Client } = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');

async function main() {
  const [host, port, user, password, database, table, rowsArg] = process.argv.slice(2);
  const rows = parseInt(rowsArg, 10);
  const config = { host, port: parseInt(port, 10), user, password, database,
                   connectionTimeoutMillis: 15000 };
  // Bounded: the whole run gives up after 60 s (unref: does not keep the process alive).
  setTimeout(() => {
    process.stdout.write(JSON.stringify({ fatal: 'timed out after 60 s' }) + '\n');
    process.exit(2);
  }, 60000).unref();
  const result = {};
  const a = new Client(config);
  const b = new Client(config);
  await a.connect();
  await b.connect();
  try {
    // COPY in
    const lines = [];
    for (let i = 1; i <= rows; i++) lines.push(`${i}\tnode-${i}\n`);
    const inStream = a.query(copyFrom(`COPY ${table} (id, v) FROM STDIN`));
    await pipeline(Readable.from(lines), inStream);
    result.copy_in_rowcount = inStream.rowCount;
    result.count_after_copy_in = Number(
      (await a.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);

    // COPY out
    const chunks = [];
    const outStream = a.query(copyTo(`COPY (SELECT id, v FROM ${table} ORDER BY id) TO STDOUT`));
    await pipeline(outStream, new Writable({
      write(chunk, _enc, cb) { chunks.push(chunk); cb(); },
    }));
    const text = Buffer.concat(chunks).toString('utf8');
    result.copy_out_rowcount = outStream.rowCount;
    result.copy_out_matches = text === lines.join('');
    result.copy_out_bytes = Buffer.byteLength(text);

    // an error, and the connection is still usable afterwards
    try {
      await a.query('SELECT 1 / $1::int AS x', [0]);
      result.error = null;
    } catch (e) {
      result.error = { code: e.code, message: e.message };
    }
    result.after_error = (await a.query('SELECT $1::int + 1 AS x', [41])).rows[0].x;

    // 50 transactions with parameters; the other client takes a server every other time
    const txns = [];
    const pids = new Set();
    for (let i = 0; i < 50; i++) {
      const hold = i % 2 === 1;
      if (hold) {
        await b.query('BEGIN');
        await b.query('SELECT 1');
      }
      await a.query('BEGIN');
      await a.query(`INSERT INTO ${table} (id, v) VALUES ($1, $2)`, [100000 + i, `txn-${i}`]);
      const r = await a.query(
        `SELECT v, $2::int * 2 AS doubled, pg_backend_pid() AS pid FROM ${table} WHERE id = $1`,
        [100000 + i, i]);
      await a.query('COMMIT');
      if (hold) await b.query('COMMIT');
      pids.add(r.rows[0].pid);
      txns.push([r.rows[0].v, r.rows[0].doubled]);
    }
    result.txns = txns;
    result.backend_pids = pids.size;
    result.final_count = Number((await a.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
  } finally {
    await a.end();
    await b.end();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ fatal: String(e && e.stack || e) }) + '\n');
  process.exit(1);
});
