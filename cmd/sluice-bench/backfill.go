package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/backfill"
)

// backfillPoll is how often the job's state is asked for: the rate is
// exact to about this much (plus one request) of the run.
const backfillPoll = 20 * time.Millisecond

// backfillThroughput backfills the bench table, its want rows (the
// warm-up row, the backlog, the latency rows and the big transaction),
// through a freshly started sluice, as `sluice backfill` asks for it: a
// request on the source's control subject, with the default chunk size.
// It is timed from the request until the job's state is done (its last
// chunk's events stored and its cursor saved); sluice's peak RSS is that
// process's high-water mark, as for the catch-up. Then the embedded
// JetStream alone takes as many messages of the backfill's size, the
// sink's limit it is held to; and on pg it times COPY (SELECT * FROM bench
// ORDER BY id) TO STDOUT of the same table: PostgreSQL's own bulk export
// in key order.
//
// It runs after the other phases (only the collation phase follows),
// because it changed the other figures when it ran before
// the latency run (--rows 300000): its op "r" and chunk events doubled
// what the apply run landed (622,324 events at 21,145/s instead of
// 321,001 at 27,031/s), and the seconds sluice ran moved the slot's
// restart_lsn past the backlog, which PostgreSQL otherwise decodes again
// when the latency run starts sluice, about 0.9 s that outlasts its
// warm-up (p99 3-21 ms after a backfill, 432-614 ms without).
func (r *run) backfillThroughput(ctx context.Context, res *result, want int64) error {
	pg, isPG := r.db.(*pgBench)
	var walEnd string
	if isPG {
		if err := pg.settle(ctx); err != nil {
			return err
		}
		var err error
		if walEnd, err = pg.walEnd(ctx); err != nil {
			return err
		}
	}
	p, nc, s, err := r.start(ctx, r.profile("backfill.cpu"))
	if err != nil {
		return err
	}
	defer nc.Close()
	defer p.stop()
	if isPG {
		// sluice reconnects at its slot's restart_lsn and decodes all the
		// WAL since, apply's writes to the other database included, before
		// a watermark can come through: not the backfill's time.
		if err := pg.waitDecoded(ctx, walEnd, p); err != nil {
			return err
		}
	}
	before, err := s.Info(ctx)
	if err != nil {
		return err
	}
	table := r.db.table()
	job, took, err := timeBackfill(ctx, nc, p, table, want)
	if err != nil {
		return err
	}
	after, err := s.Info(ctx)
	if err != nil {
		return err
	}
	events := after.State.LastSeq - before.State.LastSeq
	if events < uint64(want) {
		return fmt.Errorf("sluice's backfill of %s stored %d messages for %d rows: see %s", table, events, want, r.logPath())
	}
	res.BackfillTable = table
	res.BackfillRows = job.Rows
	res.BackfillChunks = job.Chunks
	res.BackfillChunkSize = job.ChunkSize
	res.BackfillEvents = events
	res.BackfillSeconds = took.Seconds()
	res.BackfillRate = float64(job.Rows) / res.BackfillSeconds
	if res.BackfillPeakRSS, err = p.peakRSS(); err != nil {
		return err
	}
	if err := p.heapProfile(r.profile("backfill.heap")); err != nil {
		return err
	}
	// A message from the middle of the backfill: an op "r" event.
	mid, err := s.GetMsg(ctx, before.State.LastSeq+events/2)
	if err != nil {
		return err
	}
	if err := p.stop(); err != nil {
		return err
	}
	// The sink's limit under the same conditions: the limit of the
	// catch-up rounds was measured minutes and gigabytes of writes
	// earlier, and in the full runs the backfill's rate moved with those
	// (0.77-0.94 of it, 1.05-1.34 when fewer phases ran before).
	step("embedded JetStream alone takes %d messages of %d bytes, as the backfill stored", events, len(mid.Data))
	dir := filepath.Join(r.dir, "limit-backfill")
	defer os.RemoveAll(dir)
	lo := r.o
	lo.rows = int(events)
	size := msgSize{data: len(mid.Data), id: len(mid.Header.Get(jetstream.MsgIDHeader))}
	if res.BackfillSinkRate, err = jetStreamLimit(ctx, dir, lo, size, true, ""); err != nil {
		return err
	}
	if !isPG {
		return nil
	}
	step("COPY (SELECT * FROM bench ORDER BY id) TO STDOUT of the same table")
	took, err = copyOut(ctx, pg, want)
	if err != nil {
		return err
	}
	res.BackfillCopySeconds = took.Seconds()
	res.BackfillCopyRate = float64(want) / res.BackfillCopySeconds
	return nil
}

// timeBackfill asks the running sluice for a backfill of table and times
// it from the request until the job is done; the job must read want rows.
// It returns the finished job and its time.
func timeBackfill(ctx context.Context, nc *nats.Conn, p *sluiceProc, table string, want int64) (backfill.Job, time.Duration, error) {
	start, job, err := askBackfill(ctx, nc, table, p)
	if err != nil {
		return job, 0, err
	}
	job, done, err := waitBackfill(ctx, nc, job, p)
	if err != nil {
		return job, 0, err
	}
	if job.Rows != want {
		return job, 0, fmt.Errorf("sluice's backfill of %s read %d rows, the table holds %d: see %s", table, job.Rows, want, p.logPath)
	}
	return job, done.Sub(start), nil
}

// askBackfill requests a backfill of table from the running sluice, as
// `sluice backfill` does, and returns when it was asked and the job queued.
func askBackfill(ctx context.Context, nc *nats.Conn, table string, p *sluiceProc) (time.Time, backfill.Job, error) {
	// Ready means the log is open, and the control subjects are listened
	// on before that; a request can still overtake the subscription on
	// its way to the server, which answers "no responders".
	deadline := time.Now().Add(30 * time.Second)
	for {
		start := time.Now()
		rep, err := backfill.Ask(ctx, nc, backfill.StartSubject(benchSource), backfill.Request{Tables: []string{table}})
		switch {
		case err == nil && len(rep.Jobs) == 1:
			return start, rep.Jobs[0], nil
		case err == nil:
			return time.Time{}, backfill.Job{}, fmt.Errorf("sluice answered a backfill of %s with %d jobs, want 1: see %s", table, len(rep.Jobs), p.logPath)
		case !errors.Is(err, backfill.ErrNoSluice) || time.Now().After(deadline):
			return time.Time{}, backfill.Job{}, fmt.Errorf("request a backfill of %s: %w; sluice's log:\n%s", table, err, tail(p.logPath, 20))
		}
		select {
		case <-p.done:
			return time.Time{}, backfill.Job{}, fmt.Errorf("sluice exited (%v); its log:\n%s", p.err, tail(p.logPath, 20))
		case <-ctx.Done():
			return time.Time{}, backfill.Job{}, ctx.Err()
		case <-time.After(backfillPoll):
		}
	}
}

// waitBackfill asks sluice for its jobs until job is done, and returns it
// as done and when that was seen.
func waitBackfill(ctx context.Context, nc *nats.Conn, job backfill.Job, p *sluiceProc) (backfill.Job, time.Time, error) {
	deadline := time.Now().Add(30 * time.Minute)
	for {
		rep, err := backfill.Ask(ctx, nc, backfill.JobsSubject(benchSource), struct{}{})
		if err != nil {
			return job, time.Time{}, fmt.Errorf("ask sluice for its backfill jobs: %w", err)
		}
		now := time.Now()
		for _, j := range rep.Jobs {
			if j.ID != job.ID {
				continue
			}
			switch j.State {
			case backfill.StateDone:
				return j, now, nil
			case backfill.StateRunning:
				job = j
			default:
				return j, now, fmt.Errorf("sluice's backfill of %s is %s after %d rows (%s); its log:\n%s",
					j.Table, j.State, j.Rows, j.Error, tail(p.logPath, 20))
			}
		}
		select {
		case <-p.done:
			return job, time.Time{}, fmt.Errorf("sluice exited during the backfill (%v); its log:\n%s", p.err, tail(p.logPath, 20))
		case <-ctx.Done():
			return job, time.Time{}, ctx.Err()
		case <-time.After(backfillPoll):
		}
		if now.After(deadline) {
			return job, time.Time{}, fmt.Errorf("sluice's backfill of %s read %d of about %d rows within 30m; its log:\n%s",
				job.Table, job.Rows, job.Estimate, tail(p.logPath, 20))
		}
	}
}

// settle leaves the backfill and the COPY a quiet server: apply's target
// database goes (autovacuum would work on its tables meanwhile), the bench
// table is vacuumed (the first reader of freshly written rows sets their
// hint bits: the backfill, not the COPY after it) and a checkpoint writes
// out what the earlier phases dirtied.
func (b *pgBench) settle(ctx context.Context) error {
	for _, sql := range []string{"DROP DATABASE IF EXISTS " + targetDB, "VACUUM ANALYZE bench", "CHECKPOINT"} {
		if _, err := b.conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("settle the database before the backfill (%s): %w", sql, err)
		}
	}
	return nil
}

// copyOut reads the bench table with COPY in key order, to nowhere, and
// times it.
func copyOut(ctx context.Context, pg *pgBench, want int64) (time.Duration, error) {
	start := time.Now()
	tag, err := pg.conn.PgConn().CopyTo(ctx, io.Discard, "COPY (SELECT * FROM bench ORDER BY id) TO STDOUT")
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("COPY the bench table out: %w", err)
	}
	if tag.RowsAffected() != want {
		return 0, fmt.Errorf("COPY of the bench table read %d rows, want %d", tag.RowsAffected(), want)
	}
	return took, nil
}
