"""Differential test of request accounting around COPY: random but valid pipelines that mix
COPY FROM STDIN and COPY TO STDOUT (simple Query and extended protocol) with ordinary
queries, transaction control and errors, each pipeline sent in one write as pgx and
postgres.js send them, run DIRECTLY against PostgreSQL and then through the pooler in
transaction mode, and the replies compared message by message.

What the generator varies is what the tracker has to get right: Syncs and Flushes sent
while the server is in COPY IN (PostgreSQL answers neither), a Sync between Execute and
the COPY data, a bad row that fails the COPY while more CopyData and the CopyDone are
still on their way (simple: ignored after the error; extended: skipped up to the Sync),
CopyFail, a COPY TO STDOUT that fails after some rows, a COPY inside BEGIN and the failed
transaction after it, and statements pipelined behind all of that.

Every pipeline ends with `Sync`, `ROLLBACK` and a marker query, so that no transaction
outlives it and the reader knows where its replies end. The pooled run alternates two
clients over default_pool_size=1, so every pipeline of one client starts on the server
the other client's last pipeline left: a reply owed, or one too many counted, shows as a
difference or a hang (the read has a deadline).

Left out, because PostgreSQL ends the session for them (test_txn_copy covers that): any
other message while the server is in COPY IN. Also left out: a Sync or Flush after the
bad row of a simple-Query COPY (where PostgreSQL reads the rest of the stream after the
error depends on how it buffers rows).

The inputs are fixed by their seeds (SLUICE_DIFF_SEED adds to them, SLUICE_DIFF_SESSIONS
sets the number of pipelines); a failure names the seed and prints both replies."""

import os
import random

import pytest

from pgwire import diff_tokens, m, short, shown

SEED = int(os.environ.get('SLUICE_DIFF_SEED', '0'))
PIPELINES = int(os.environ.get('SLUICE_DIFF_SESSIONS', '400'))
MARK = 'end of pipeline'
ERROR_FIELDS = 'SVCM'


def copy_rows(rnd):
    """CopyData messages (one row each, at most one bad), Syncs and Flushes sprinkled."""
    out, bad = [], False
    for i in range(rnd.randint(0, 6)):
        if not bad and rnd.random() < 0.15:
            out.append(m.copy_data('not-a-number\tbad\n'))
            bad = True
        else:
            out.append(m.copy_data('%d\trow%d\n' % (i, i)))
        if rnd.random() < 0.15:
            out.append(rnd.choice([m.sync(), m.flush()]))
    return out


def copy_in(rnd, extended):
    # copytrig's BEFORE STATEMENT trigger fails the COPY before it reads any data.
    sql = 'COPY %s FROM STDIN' % ('copytrig' if rnd.random() < 0.15 else 'copytest')
    msgs = [m.parse(sql), m.bind(), m.execute()] if extended else [m.query(sql)]
    if extended and rnd.random() < 0.5:
        msgs.append(m.sync())            # libpq's: ignored unless the COPY failed before it
    msgs += copy_rows(rnd)
    if rnd.random() < 0.2:
        msgs.append(m.copy_fail('client gave up'))
    else:
        msgs.append(m.copy_done())
    if extended:
        msgs.append(m.sync())
    return msgs


def copy_out(rnd, extended):
    n = rnd.randint(0, 8)
    expr = '10 / (g - 5)' if rnd.random() < 0.3 else 'g'
    sql = 'COPY (SELECT %s FROM generate_series(1, %d) g) TO STDOUT' % (expr, n)
    if extended:
        return [m.parse(sql), m.bind(), m.execute(), m.sync()]
    return [m.query(sql)]


def statement(rnd):
    r = rnd.random()
    if r < 0.25:
        return [m.query(rnd.choice(['SELECT 1', 'SELECT 1/0', 'BEGIN', 'COMMIT', 'ROLLBACK',
                                    'SELECT count(*) > -1 FROM copytest']))]
    if r < 0.5:
        return [m.parse(rnd.choice(['SELECT 2', 'SELECT 1/0', 'BEGIN'])), m.bind(),
                m.execute(), rnd.choice([m.sync(), m.flush()])]
    if r < 0.6:
        return [m.flush()]
    return [m.sync()]


def make_pipeline(rnd):
    msgs = []
    for _ in range(rnd.randint(1, 5)):
        r = rnd.random()
        if r < 0.35:
            msgs += copy_in(rnd, extended=rnd.random() < 0.5)
        elif r < 0.55:
            msgs += copy_out(rnd, extended=rnd.random() < 0.5)
        else:
            msgs += statement(rnd)
    return msgs + [m.sync(), m.query('ROLLBACK'), m.query("SELECT '%s'" % MARK)]


def run_pipeline(conn, msgs):
    conn.send(*msgs)
    out = conn.read_until(lambda x: x.type == 'D' and short(x) == 'D:' + MARK, timeout=10)
    out += conn.read_until_rfq(timeout=10)
    return diff_tokens(out, ERROR_FIELDS)


@pytest.mark.differs_from_pgbouncer_1_18(
    "PgBouncer 1.18 keeps a server from the next client after some of these pipelines (a "
    "stray CopyDone, a Query skipped after an extended-protocol error)")
def test_random_copy_pipelines_match_postgresql(env, copy_table, refusing_table):
    plans = []
    for i in range(PIPELINES):
        seed = SEED + i
        plans.append((seed, make_pipeline(random.Random(seed))))
    d = env.direct()
    want = [run_pipeline(d, msgs) for _, msgs in plans]
    d.close()
    clients = [env.pooled(), env.pooled()]
    for k, (seed, msgs) in enumerate(plans):
        got = run_pipeline(clients[k % 2], msgs)
        assert got == want[k], (
            'seed %d (pipeline %d of %d, client %d) differs from PostgreSQL\n  sent:    %s\n'
            '  direct:  %s\n  pooler:  %s' % (seed, k + 1, len(plans), k % 2 + 1,
                                              [shown(x, 50) for x in msgs], want[k], got))
    for c in clients:
        c.close()
    env.assert_clean()
