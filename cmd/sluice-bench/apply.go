package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/apply"
)

const (
	// targetDB is the database `sluice apply` writes to, on the bench's
	// own PostgreSQL: the same server, so apply and COPY are held to the
	// same disk and settings.
	targetDB = "target"
	// applyGroup is apply's consumer group: new on every run's stream, so
	// apply starts at the stream's first message.
	applyGroup = "sluice-bench-apply"
	// applyPoll is how often the target's positions are read: the rate is
	// exact to about this much of the run.
	applyPoll = 50 * time.Millisecond
	// pgSlot is the slot sluice uses for source "bench".
	pgSlot = "sluice_bench"
)

// applyThroughput runs `sluice apply` on the backlog the catch-up left on
// the stream, into a new database of the bench's PostgreSQL, and times it
// from the start of the process until the target's sluice.apply_positions
// count every event of the stream's partitions; then it times COPY of the
// same rows into a table of the bench table's shape. sluice run serves
// its embedded NATS meanwhile and has nothing to read.
func (r *run) applyThroughput(ctx context.Context, pg *pgBench) (*applyResult, error) {
	p, nc, s, err := r.start(ctx, "")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	defer p.stop()
	subjects := s.CachedInfo().Config.Subjects
	if len(subjects) != 1 || !strings.HasSuffix(subjects[0], ".>") {
		return nil, fmt.Errorf("sluice's stream has subjects %v, want one PREFIX.SOURCE.>: is the bench's sluice.yaml what sluice read?", subjects)
	}
	events, err := partitionMessages(ctx, s, subjects[0], r.o.partitions)
	if err != nil {
		return nil, err
	}
	before, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if err := pg.srv.CreateDatabase(ctx, targetDB); err != nil {
		return nil, fmt.Errorf("create the apply target database: %w", err)
	}
	res := &applyResult{Events: events, Batch: apply.DefaultBatch, CopyRows: r.o.rows}
	took, err := r.runApply(ctx, pg, subjects[0], events)
	if err != nil {
		return nil, err
	}
	res.Seconds = took.Seconds()
	res.Rate = float64(events) / res.Seconds
	step("COPY of the same %d rows into a table of the same shape", r.o.rows)
	if took, err = copyRows(ctx, pg, r.o.rows, r.o.rowBytes); err != nil {
		return nil, err
	}
	res.CopySeconds = took.Seconds()
	res.CopyRate = float64(r.o.rows) / res.CopySeconds

	after, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if after.State.LastSeq != before.State.LastSeq {
		return nil, fmt.Errorf("sluice's stream went from sequence %d to %d during the apply run, which writes no captured row: see %s",
			before.State.LastSeq, after.State.LastSeq, r.logPath())
	}
	if err := dropConsumers(ctx, s); err != nil {
		return nil, err
	}
	if err := p.stop(); err != nil {
		return nil, err
	}
	return res, nil
}

// dropConsumers deletes the stream's consumers, which the stopped apply
// left behind (its group's durable consumers, one per partition). The
// stream wakes each consumer whose filter a new message matches, so the
// backfill that runs next would pay for idle consumers that the JetStream
// limit it is compared with does not have: 115k rows/s with them against
// 175k without.
func dropConsumers(ctx context.Context, s jetstream.Stream) error {
	names := s.ConsumerNames(ctx)
	var all []string
	for name := range names.Name() {
		all = append(all, name)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list the stream's consumers: %w", err)
	}
	for _, name := range all {
		if err := s.DeleteConsumer(ctx, name); err != nil {
			return fmt.Errorf("delete apply's consumer %s: %w", name, err)
		}
	}
	step("deleted apply's %d consumers of the stream", len(all))
	return nil
}

// partitionMessages counts the stream's messages on the partition
// subjects PREFIX.SOURCE.*.*.<p>: the events apply counts in
// sluice.apply_positions, which leave out the _schema subjects.
func partitionMessages(ctx context.Context, s jetstream.Stream, all string, partitions int) (int, error) {
	filter := strings.TrimSuffix(all, ">") + "*.*.*"
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, fmt.Errorf("count the stream's messages on %s: %w", filter, err)
	}
	n := 0
	for subject, count := range info.State.Subjects {
		last := subject[strings.LastIndexByte(subject, '.')+1:]
		if p, err := strconv.Atoi(last); err == nil && p >= 0 && p < partitions {
			n += int(count)
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("no messages on %s: the catch-up should have left the backlog there", filter)
	}
	return n, nil
}

// runApply starts `sluice apply` into the target database and returns the
// time from its start until it has applied want events.
func (r *run) runApply(ctx context.Context, pg *pgBench, subject string, want int) (time.Duration, error) {
	watch, err := pgx.Connect(ctx, pg.srv.DSN(targetDB))
	if err != nil {
		return 0, fmt.Errorf("connect to the apply target: %w", err)
	}
	defer watch.Close(context.Background())
	// An explicit empty --user: a NATS_USER in the caller's environment
	// would otherwise log in to the embedded NATS, which knows no users
	// and takes anonymous clients on loopback.
	args := []string{"apply", "--nats", r.natsURL, "--user=", "--to", pg.srv.DSN(targetDB),
		"--group", applyGroup, "--member", "bench", "--create", "--batch", strconv.Itoa(apply.DefaultBatch),
		"--http-listen=", subject}
	logPath := filepath.Join(r.dir, "apply.log")
	start := time.Now()
	a, err := startProc(r.o.sluiceBin, args, logPath, "", nil)
	if err != nil {
		return 0, err
	}
	defer a.stop()
	deadline := start.Add(30 * time.Minute)
	for {
		n, err := appliedEvents(ctx, watch)
		if err != nil {
			return 0, err
		}
		if n >= want {
			took := time.Since(start)
			if n > want {
				return 0, fmt.Errorf("sluice apply counts %d events applied, the stream's partitions hold %d: see %s", n, want, logPath)
			}
			if err := a.stop(); err != nil {
				return 0, fmt.Errorf("sluice apply: %w; its log:\n%s", err, tail(logPath, 20))
			}
			return took, nil
		}
		select {
		case <-a.done:
			return 0, fmt.Errorf("sluice apply exited (%v) after %d of %d events; its log:\n%s", a.err, n, want, tail(logPath, 20))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(applyPoll):
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("sluice apply applied %d of %d events within 30m; its log:\n%s", n, want, tail(logPath, 20))
		}
	}
}

// appliedEvents is the number of events apply has committed to the target,
// 0 before it has created its bookkeeping.
func appliedEvents(ctx context.Context, conn *pgx.Conn) (int, error) {
	var n int64
	err := conn.QueryRow(ctx, `SELECT coalesce(sum(events), 0)::bigint FROM sluice.apply_positions WHERE source = 'bench'`).Scan(&n)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table or schema
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read sluice.apply_positions in the apply target: %w", err)
	}
	return int(n), nil
}

// copyRows COPYs rows [1, n] of the backlog, the same payloads, into a new
// table of the bench table's shape, in one COPY, and times it. The rows
// are made before the clock starts, so it times PostgreSQL's side.
func copyRows(ctx context.Context, pg *pgBench, n, rowBytes int) (time.Duration, error) {
	conn, err := pgx.Connect(ctx, pg.srv.DSN(targetDB))
	if err != nil {
		return 0, fmt.Errorf("connect to the COPY target: %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE public.bench_copy (id bigint PRIMARY KEY, payload text NOT NULL)`); err != nil {
		return 0, fmt.Errorf("create the COPY table: %w", err)
	}
	payloads := make([]string, n)
	for i := range payloads {
		payloads[i] = payload(i+1, rowBytes-8)
	}
	start := time.Now()
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"public", "bench_copy"}, []string{"id", "payload"},
		pgx.CopyFromSlice(n, func(i int) ([]any, error) { return []any{int64(i + 1), payloads[i]}, nil }))
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("COPY into the apply target: %w", err)
	}
	if copied != int64(n) {
		return 0, fmt.Errorf("COPY wrote %d rows of %d", copied, n)
	}
	return took, nil
}
