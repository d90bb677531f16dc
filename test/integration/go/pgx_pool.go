// pgx (v4, Debian's golang-github-jackc-pgx-v4-dev) through sluice in transaction pooling
// (test/integration/test_ps_drivers.py). pgx keeps a per-connection statement cache: in the
// default mode it prepares every query under its own name (Parse + Describe + Sync) and then
// sends Bind + Execute + Sync alone; a Batch pipelines many Bind/Execute pairs behind one
// Sync; CopyFrom streams binary COPY. The pooler must keep those names valid on whatever
// server the next transaction lands on.
//
// usage: pgx_pool DSN WORKERS ROUNDS MODE   (MODE: prepare | describe | simple)
// prints "queries=N transactions=M" and exits 0, or exits 1 with the error.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

func check(what string, got, want interface{}) error {
	if fmt.Sprint(got) != fmt.Sprint(want) {
		return fmt.Errorf("%s: got %v, want %v", what, got, want)
	}
	return nil
}

type counts struct{ queries, transactions int }

func worker(ctx context.Context, dsn, mode string, w, rounds int) (counts, error) {
	var c counts
	switch mode {
	case "describe": // unnamed statements: Parse + Describe + Sync, then Parse + Bind + ...
		dsn += " statement_cache_mode=describe"
	case "simple":
		dsn += " prefer_simple_protocol=true"
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return c, err
	}
	cfg.MaxConns = 3
	pool, err := pgxpool.ConnectConfig(ctx, cfg)
	if err != nil {
		return c, err
	}
	defer pool.Close()

	for r := 0; r < rounds; r++ {
		// Queries at once from several goroutines over the pool's 3 connections.
		var wg sync.WaitGroup
		errs := make(chan error, 12)
		for g := 0; g < 12; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				var sum int
				var cat string
				if err := pool.QueryRow(ctx, "SELECT $1::int + $2::int AS pgx_add", r, g).Scan(&sum); err != nil {
					errs <- err
					return
				}
				if err := check("add", sum, r+g); err != nil {
					errs <- err
					return
				}
				if err := pool.QueryRow(ctx, "SELECT $1::text || '-' || $2::text AS pgx_cat", fmt.Sprint("w", w), fmt.Sprint(g%3)).Scan(&cat); err != nil {
					errs <- err
					return
				}
				if err := check("cat", cat, fmt.Sprintf("w%d-%d", w, g%3)); err != nil {
					errs <- err
				}
			}(g)
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			return c, e
		}
		c.queries += 24

		// A batch: many queries pipelined behind one Sync, in an implicit transaction.
		b := &pgx.Batch{}
		for i := 0; i < 10; i++ {
			b.Queue("SELECT $1::int * 2 AS pgx_dbl", r*100+i)
		}
		b.Queue("SELECT count(*)::int AS pgx_n FROM generate_series(1, $1::int)", r+1)
		br := pool.SendBatch(ctx, b)
		for i := 0; i < 10; i++ {
			var v int
			if err := br.QueryRow().Scan(&v); err != nil {
				br.Close()
				return c, err
			}
			if err := check("batch", v, 2*(r*100+i)); err != nil {
				br.Close()
				return c, err
			}
		}
		var n int
		if err := br.QueryRow().Scan(&n); err != nil {
			br.Close()
			return c, err
		}
		if err := br.Close(); err != nil {
			return c, err
		}
		if err := check("batch count", n, r+1); err != nil {
			return c, err
		}
		c.queries += 11

		// A transaction that fails and rolls back, then one that commits.
		tx, err := pool.Begin(ctx)
		if err != nil {
			return c, err
		}
		var z int
		err = tx.QueryRow(ctx, "SELECT 1 / $1::int AS pgx_div", 0).Scan(&z)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "22012" {
			tx.Rollback(ctx)
			return c, fmt.Errorf("division by zero: got %v", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			return c, err
		}
		tx, err = pool.Begin(ctx)
		if err != nil {
			return c, err
		}
		var pid1, pid2 int
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
			return c, err
		}
		if _, err := tx.Exec(ctx, "SELECT $1::int AS pgx_noop", r); err != nil {
			return c, err
		}
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid2); err != nil {
			return c, err
		}
		if err := tx.Commit(ctx); err != nil {
			return c, err
		}
		if err := check("one server per transaction", pid1, pid2); err != nil {
			return c, err
		}
		c.queries += 4
		c.transactions += 2

		// Binary COPY of this worker's rows, read back.
		base := (w*1000 + r) * 1000
		rows := make([][]interface{}, 100)
		for i := range rows {
			rows[i] = []interface{}{int32(base + i), fmt.Sprint("pgx row ", i)}
		}
		copied, err := pool.CopyFrom(ctx, pgx.Identifier{"pgx_copy"}, []string{"a", "b"}, pgx.CopyFromRows(rows))
		if err != nil {
			return c, err
		}
		if err := check("copied", copied, 100); err != nil {
			return c, err
		}
		if err := pool.QueryRow(ctx, "SELECT count(*)::int FROM pgx_copy WHERE a >= $1 AND a < $2", base, base+1000).Scan(&n); err != nil {
			return c, err
		}
		if err := check("copy count", n, 100); err != nil {
			return c, err
		}
		c.queries += 2
	}
	return c, nil
}

func main() {
	dsn := os.Args[1]
	workers, _ := strconv.Atoi(os.Args[2])
	rounds, _ := strconv.Atoi(os.Args[3])
	mode := os.Args[4]
	ctx := context.Background()
	var mu sync.Mutex
	var total counts
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c, err := worker(ctx, dsn, mode, w, rounds)
			mu.Lock()
			defer mu.Unlock()
			total.queries += c.queries
			total.transactions += c.transactions
			if err != nil && firstErr == nil {
				firstErr = fmt.Errorf("worker %d: %w", w, err)
			}
		}(w)
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, firstErr)
		os.Exit(1)
	}
	fmt.Printf("queries=%d transactions=%d\n", total.queries, total.transactions)
}
