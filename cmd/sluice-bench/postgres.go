package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

const (
	pgRecvSlot = "bench_recvlogical"
	// The names sluice gives its slot and publication for source "bench".
	pgPublication = "sluice_bench"
)

// pgBench is a private PostgreSQL with the bench table.
type pgBench struct {
	srv  *pgtest.Server
	conn *pgx.Conn // loads
	one  *pgx.Conn // latency writes
}

func startPostgres(ctx context.Context, dir string) (*pgBench, error) {
	// Commits as on a production server: with synchronous_commit off the
	// WAL writer flushes only every wal_writer_delay (200ms), and the
	// walsender sends nothing before it is flushed.
	srv, err := pgtest.Start(ctx, pgtest.Options{Dir: filepath.Join(dir, "pg"),
		Settings: map[string]string{"synchronous_commit": "on"}})
	if err != nil {
		return nil, err
	}
	b := &pgBench{srv: srv}
	if err := b.setup(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *pgBench) setup(ctx context.Context) error {
	if err := b.srv.CreateDatabase(ctx, "bench"); err != nil {
		return err
	}
	if err := b.srv.Exec(ctx, "bench", `CREATE TABLE bench (id bigint PRIMARY KEY, payload text NOT NULL)`); err != nil {
		return err
	}
	var err error
	if b.conn, err = pgx.Connect(ctx, b.srv.DSN("bench")); err != nil {
		return err
	}
	b.one, err = pgx.Connect(ctx, b.srv.DSN("bench"))
	return err
}

func (b *pgBench) close() {
	for _, c := range []*pgx.Conn{b.conn, b.one} {
		if c != nil {
			c.Close(context.Background())
		}
	}
	b.srv.Stop()
}

func (b *pgBench) sourceYAML() string {
	return fmt.Sprintf("{name: %s, kind: postgres, dsn: %q, tables: [%s]}", benchSource, b.srv.DSN("bench"), b.table())
}

func (b *pgBench) table() string { return "public.bench" }

// payloadSQL is a payload of n bytes that differs per row.
func payloadSQL(n int) string {
	return fmt.Sprintf("left(repeat(md5(g::text), %d), %d)", n/32+1, n)
}

// insert commits rows [from, from+n) in one transaction.
func (b *pgBench) insert(ctx context.Context, conn *pgx.Conn, from, n, rowBytes int) error {
	_, err := conn.Exec(ctx, "INSERT INTO bench SELECT g, "+payloadSQL(rowBytes-8)+
		" FROM generate_series($1::bigint, $2::bigint) g", from, from+n-1)
	return err
}

func (b *pgBench) load(ctx context.Context, from, n, txSize, rowBytes int, progress func(int)) error {
	for done := 0; done < n; {
		k := min(txSize, n-done)
		if err := b.insert(ctx, b.conn, from+done, k, rowBytes); err != nil {
			return fmt.Errorf("load rows: %w", err)
		}
		done += k
		progress(k)
	}
	return nil
}

func (b *pgBench) bigTx(ctx context.Context, from, n, rowBytes int) error {
	return b.insert(ctx, b.conn, from, n, rowBytes)
}

func (b *pgBench) insertOne(ctx context.Context, id int, payload string) error {
	_, err := b.one.Exec(ctx, "INSERT INTO bench VALUES ($1, $2)", id, payload)
	return err
}

// prepareBaseline gives pg_recvlogical its own slot before the backlog is
// written, so it reads exactly what sluice reads.
func (b *pgBench) prepareBaseline(ctx context.Context) (baseline, error) {
	if _, err := b.conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", pgRecvSlot); err != nil {
		return nil, fmt.Errorf("create the pg_recvlogical slot: %w", err)
	}
	return &pgRecvlogical{b: b}, nil
}

// pgRecvlogical is PostgreSQL's own reader of a logical slot, writing the
// pgoutput stream to /dev/null: the fastest anything can read the slot.
type pgRecvlogical struct{ b *pgBench }

func (r *pgRecvlogical) name() string { return "pg_recvlogical" }

func (r *pgRecvlogical) read(ctx context.Context, n int) (time.Duration, error) {
	var end string
	if err := r.b.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&end); err != nil {
		return 0, err
	}
	bin := filepath.Join(r.b.srv.BinDir(), "pg_recvlogical")
	cmd := exec.CommandContext(ctx, bin, "--start", "--no-loop",
		"-S", pgRecvSlot, "--endpos", end,
		"-d", "host=127.0.0.1 port="+strconv.Itoa(r.b.srv.Port())+" user=postgres dbname=bench",
		"-o", "proto_version=1", "-o", "publication_names="+pgPublication,
		"-f", os.DevNull)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+r.b.srv.Password())
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if _, derr := r.b.conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", pgRecvSlot); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w: %s", bin, err, out)
	}
	return took, nil
}

// walEnd is the log's current end, for waitDecoded.
func (b *pgBench) walEnd(ctx context.Context) (string, error) {
	var lsn string
	if err := b.conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		return "", fmt.Errorf("read the end of the WAL: %w", err)
	}
	return lsn, nil
}

// waitDecoded waits until sluice's walsender has decoded the log up to
// lsn: rows written to tables outside the publication are skipped, but
// read, and must not be read during a timed backfill.
func (b *pgBench) waitDecoded(ctx context.Context, lsn string, p *sluiceProc) error {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var done bool
		err := b.conn.QueryRow(ctx, `SELECT coalesce(r.sent_lsn >= $1::pg_lsn, false)
			FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
			WHERE s.slot_name = $2`, lsn, pgSlot).Scan(&done)
		if err != nil {
			return fmt.Errorf("read how far sluice's walsender is: %w", err)
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sluice's walsender did not decode the log up to %s within 5m", lsn)
		}
		select {
		case <-p.done:
			return fmt.Errorf("sluice exited (%v); its log:\n%s", p.err, tail(p.logPath, 20))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backfillPoll):
		}
	}
}
