package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// TestPostgresFailover: sluice runs on a two-host DSN
// (target_session_attrs=read-write) with a backfill under way; the primary
// goes down and its streaming standby is promoted while writes go on.
// PostgreSQL 15 slots do not follow a failover: sluice must find the slot
// gone on the new primary, record the gap, backfill, and never exit; the
// stream materialized with the chunk rule equals the new primary's table.
func TestPostgresFailover(t *testing.T) {
	t.Parallel()
	primary := pgtest.New(t)
	e := newEnv(t, primary, "public.items")
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 100}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	e.exec(`INSERT INTO items SELECT g, 0 FROM generate_series(1, 5000) g`)
	standby := pgtest.New(t, pgtest.Options{StandbyOf: primary})
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.1:%d/shop?sslmode=disable&target_session_attrs=read-write", primary.Port(), standby.Port())
	e.cfg.Source.DSN = dsn
	seed := testSeed(t)

	e.backfill = []string{"public.items"}
	stop, logs := e.startRun()
	w := &failoverWriter{dsn: dsn, next: 5000}
	stopWriter := startWriter(t, seed, time.Millisecond, w.op)
	waitChunks(t, e, 5, time.Minute)

	t.Log("primary down, standby promoted")
	if err := primary.Halt(); err != nil {
		t.Fatal(err)
	}
	if err := standby.Promote(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGapRepaired(t, e, 2*time.Minute)
	// The warning is what is tested here: no state tells of it.
	e.waitLog(logs, fmt.Sprintf(`from=127.0.0.1:%d to=127.0.0.1:%d`, primary.Port(), standby.Port()), time.Minute)
	// A few more writes on the new primary.
	written := w.written()
	waitUntil(t, time.Minute, "20 writes on the new primary", func() bool { return w.written() >= written+20 })
	stopWriter()
	conn, err := pgx.Connect(context.Background(), standby.DSN("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: "pg1", Schema: "public", Table: "items"}, pgState(conn))
	select {
	case <-e.finished:
		t.Fatalf("sluice exited:\n%s", tailLines(logs.String(), 30))
	default:
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("writes: %d ok, %d failed during the failover", w.ok, w.failed)
}

// failoverWriter updates, deletes and inserts through the two-host DSN,
// following the primary: a write the failover cuts off is dropped (the
// table is compared as it ends up).
type failoverWriter struct {
	dsn        string
	mu         sync.Mutex
	conn       *pgx.Conn
	next       int
	ok, failed int
}

func (w *failoverWriter) op(rng *rand.Rand) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if w.conn == nil {
		c, err := pgx.Connect(ctx, w.dsn)
		if err != nil {
			w.failed++
			// Workload, not a wait: the writer does not hammer a host
			// that is down.
			time.Sleep(50 * time.Millisecond)
			return nil
		}
		w.conn = c
	}
	var sql string
	switch rng.IntN(4) {
	case 0:
		w.next++
		sql = fmt.Sprintf("INSERT INTO items VALUES (%d, 1)", w.next)
	case 1:
		sql = fmt.Sprintf("DELETE FROM items WHERE id = %d", 1+rng.IntN(w.next))
	default:
		sql = fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", 1+rng.IntN(w.next))
	}
	if _, err := w.conn.Exec(ctx, sql); err != nil {
		w.failed++
		w.conn.Close(context.Background())
		w.conn = nil
		return nil
	}
	w.ok++
	return nil
}

// waitGapRepaired waits until a gap is recorded and every backfill that
// repairs it is done.
func waitGapRepaired(t *testing.T, e *env, timeout time.Duration) {
	t.Helper()
	gap := waitGap(t, e, timeout)
	for _, id := range gap.Jobs {
		if j := waitJob(t, e, id); j.State != backfill.StateDone {
			t.Fatalf("the gap's backfill %s ended %s: %s", id, j.State, j.Error)
		}
	}
}

// written is how many writes succeeded.
func (w *failoverWriter) written() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ok
}
