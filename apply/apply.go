// Package apply lands a source's change events in a PostgreSQL database:
// the engine of `sluice apply`. Its members form a consumer group
// (sink/consumer RunGroupBatches) over the source's partitions; each
// applies a partition's events in stream order, many per transaction, and
// stores in that same transaction the stream sequence it reached, so a
// crash at any instant applies nothing twice and skips nothing.
//
// The stored sequence, not JetStream's acknowledgements, is the truth. A
// batch starts by locking its partition's position row; events at or
// below the stored sequence were applied already and are skipped; and an
// event is applied only when it is the next one of its partition after
// the stored sequence, which the member either knows (a fresh delivery
// right after the one it applied last) or asks the stream (a direct get of
// the partition's next message). So even two members that both believe
// they own a partition, or a new owner that gets later messages before
// the dead owner's unacknowledged ones, apply the partition's events once
// each, in order.
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-cdc/sluice/sink/consumer"
)

// DefaultBatch is Config.Batch when it is zero.
const DefaultBatch = 500

// DefaultGroup is the consumer group of apply members when none is named.
const DefaultGroup = "sluice-apply"

// Config configures one apply member.
type Config struct {
	Stream     string // the source's event stream
	Prefix     string // subject prefix, e.g. "cdc"
	Source     string // source name
	Partitions int    // the stream's partition count
	Group      string // consumer group; default DefaultGroup
	Member     string // this member's name, stored with what it applies
	// TakeoverAfter is how long a dead member keeps its partitions
	// (consumer.GroupConfig.TakeoverAfter).
	TakeoverAfter time.Duration
	// Batch is the most events one transaction applies; default
	// DefaultBatch.
	Batch int
	// Create creates a missing table from its shape on the stream.
	Create bool
	// ProgressEvery is how often the progress line is logged; default 10s.
	ProgressEvery time.Duration
	Log           *slog.Logger
	Metrics       prometheus.Registerer
}

// Run applies events to db until ctx ends (it returns nil) or an event
// cannot be applied (it returns why; the event stays unacknowledged and
// unapplied, for the next start or another member).
func Run(ctx context.Context, js jetstream.JetStream, db *pgxpool.Pool, cfg Config) error {
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = prometheus.NewRegistry()
	}
	if cfg.Member == "" {
		return errors.New("apply: Member is empty: name this member")
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return fmt.Errorf("apply: stream %s: %w (is sluice running, and does the login read this source?)", cfg.Stream, err)
	}
	if err := ensureBookkeeping(ctx, db); err != nil {
		return err
	}
	for p := range cfg.Partitions {
		if _, err := db.Exec(ctx, `INSERT INTO sluice.apply_positions (source, part, seq, events, member)
VALUES ($1, $2, 0, 0, '') ON CONFLICT DO NOTHING`, cfg.Source, p); err != nil {
			return fmt.Errorf("apply: record the positions in the target: %w", err)
		}
	}
	m, err := newMetrics(cfg.Metrics, cfg.Source, cfg.Partitions)
	if err != nil {
		return err
	}
	a := &applier{cfg: cfg, stream: stream, db: db, m: m, tables: make(map[string]*table),
		parts: make([]partState, cfg.Partitions)}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return consumer.RunGroupBatches(gctx, js, consumer.GroupConfig{
			Stream: cfg.Stream, Prefix: cfg.Prefix, Source: cfg.Source, Partitions: cfg.Partitions,
			Group: cfg.Group, Member: cfg.Member, TakeoverAfter: cfg.TakeoverAfter, Batch: cfg.Batch, Log: cfg.Log,
			OnOwn: a.owned,
		}, a.handleRetrying)
	})
	g.Go(func() error { a.progress(gctx); return nil })
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return nil
	}
	return err
}

// applier is one member's state. Partitions run concurrently: parts[p] is
// touched only by partition p's goroutine; tables is shared.
type applier struct {
	cfg    Config
	stream jetstream.Stream
	db     *pgxpool.Pool
	m      *metrics

	mu     sync.Mutex
	tables map[string]*table // by schema.table, as last read and checked

	parts []partState
	// partialWarned: the warning that a new target starts after the
	// stream's retention dropped events was logged.
	partialWarned atomic.Bool
}

// partState is what a member knows of the partition it applies: valid
// when it committed the partition's last batch itself, so that the stored
// sequence still equals last unless another member moved it.
type partState struct {
	valid bool
	last  uint64 // stream sequence of the last event it applied
	// cons and fresh describe the delivery of that event: its consumer
	// sequence, and whether it was a first delivery.
	cons  uint64
	fresh bool
}

func (a *applier) owned(p int, owned bool) {
	a.m.owned(owned)
	if !owned {
		// Whatever happens next on this partition, a batch checks
		// the stored position afresh.
		a.parts[p].valid = false
	}
	a.cfg.Log.Info("apply: partition ownership", "member", a.cfg.Member, "partition", p, "owned", owned)
}

// subject filter of partition p's events.
func (a *applier) filter(p int) string {
	return a.cfg.Prefix + "." + a.cfg.Source + ".*.*." + strconv.Itoa(p)
}

// handleRetrying applies a batch, trying again while the failure is one
// that passes (the target restarting, a deadlock with another member's
// schema change, NATS answering late); the messages stay in progress
// meanwhile. Any other failure stops the member with its cause.
func (a *applier) handleRetrying(ctx context.Context, p int, msgs []jetstream.Msg) error {
	wait := 100 * time.Millisecond
	for {
		err := a.handle(ctx, p, msgs)
		if err == nil || !transient(err) || ctx.Err() != nil {
			return err
		}
		a.m.retries.Inc()
		a.cfg.Log.Warn("apply: batch failed, trying again", "partition", p, "in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// handle applies one batch of partition p in one transaction.
func (a *applier) handle(ctx context.Context, p int, msgs []jetstream.Msg) error {
	start := time.Now()
	tx, err := a.db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("apply: begin a transaction in the target: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var stored uint64
	var owner string
	if err := tx.QueryRow(ctx, `SELECT seq, member FROM sluice.apply_positions WHERE source = $1 AND part = $2 FOR UPDATE`,
		a.cfg.Source, p).Scan(&stored, &owner); err != nil {
		return fmt.Errorf("apply: read the position of partition %d in the target: %w", p, err)
	}
	st := &a.parts[p]
	b := newBatch(a, tx, p)
	// at is the last event applied; chain tells whether the next fresh
	// delivery with the following consumer sequence is surely the next
	// event of the partition.
	at := stored
	chain := st.valid && st.last == stored && st.fresh
	cons := st.cons
	skipped := 0
	first := uint64(0)
	var pending uint64
	for _, msg := range msgs {
		meta, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("apply: partition %d: message metadata: %w", p, err)
		}
		seq := meta.Sequence.Stream
		if seq <= at {
			skipped++
			chain = false
			continue
		}
		if !(chain && meta.NumDelivered == 1 && meta.Sequence.Consumer == cons+1) {
			// Not surely the next: ask the stream, and apply what comes
			// first from it.
			for {
				next, err := a.next(ctx, p, at, at == stored)
				if err != nil {
					return err
				}
				if next.Sequence >= seq {
					if next.Sequence > seq {
						return fmt.Errorf("apply: partition %d: message %d is not in the stream any more (the stream's next is %d)", p, seq, next.Sequence)
					}
					break
				}
				if first == 0 {
					first = next.Sequence
				}
				if err := b.apply(ctx, next.Subject, next.Data); err != nil {
					return fmt.Errorf("apply: stream sequence %d: %w", next.Sequence, err)
				}
				at = next.Sequence
			}
		}
		if first == 0 {
			first = seq
		}
		if err := b.apply(ctx, msg.Subject(), msg.Data()); err != nil {
			return fmt.Errorf("apply: stream sequence %d: %w", seq, err)
		}
		at, cons, chain = seq, meta.Sequence.Consumer, meta.NumDelivered == 1
		pending = meta.NumPending
	}
	a.m.skipped.Add(float64(skipped))
	if at == stored {
		// Nothing new: every message was applied before.
		st.valid = false
		return nil
	}
	if err := b.flush(ctx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE sluice.apply_positions SET seq = $3, events = events + $4, member = $5, updated_at = now()
WHERE source = $1 AND part = $2`, a.cfg.Source, p, at, b.events, a.cfg.Member); err != nil {
		return fmt.Errorf("apply: store the position of partition %d: %w", p, err)
	}
	if owner != a.cfg.Member {
		if _, err := tx.Exec(ctx, `INSERT INTO sluice.apply_owners (source, part, from_seq, member) VALUES ($1, $2, $3, $4)`,
			a.cfg.Source, p, first, a.cfg.Member); err != nil {
			return fmt.Errorf("apply: record the owner of partition %d: %w", p, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("apply: commit partition %d up to stream sequence %d: %w", p, at, err)
	}
	b.committed()
	*st = partState{valid: true, last: at, cons: cons, fresh: chain}
	a.m.applied(p, b.events, at, b.lastTs, time.Since(start), pending)
	return nil
}

// next returns partition p's first message after sequence after, from the
// stream itself. From the stored position (stored), it also warns when the
// stream's retention removed messages after it; a later after is a message
// just read, which the stream still holds, so nothing after it was removed.
func (a *applier) next(ctx context.Context, p int, after uint64, stored bool) (*jetstream.RawStreamMsg, error) {
	msg, err := a.stream.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(a.filter(p)))
	if err != nil {
		return nil, fmt.Errorf("apply: partition %d: read the event after stream sequence %d: %w", p, after, err)
	}
	if !stored || msg.Sequence == after+1 {
		return msg, nil
	}
	info, err := a.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply: stream info: %w", err)
	}
	if after == 0 && info.State.FirstSeq > 1 && a.partialWarned.CompareAndSwap(false, true) {
		// A new target: what the stream dropped before it existed is
		// for a backfill to bring back.
		a.cfg.Log.Warn("apply: the stream no longer holds its first events (retention), so the target misses the rows they wrote: "+
			"run `sluice backfill` of the tables to replay them", "stream_first_seq", info.State.FirstSeq)
	}
	if after > 0 && info.State.FirstSeq > after+1 {
		// Events between the stored position and the stream's first were
		// removed. Whether any was this partition's cannot be told (an
		// idle partition's position is old too), so this warns, by name,
		// rather than stop every restart of a stream with retention.
		a.m.retention.Inc()
		a.cfg.Log.Warn("apply: the stream removed events after this partition's stored position (retention): if any was this partition's, "+
			"the target misses it; raise the stream's retention, and run `sluice backfill` of the tables if the target was behind",
			"partition", p, "stored_seq", after, "stream_first_seq", info.State.FirstSeq)
	}
	return msg, nil
}

// progress logs what this member applied, every ProgressEvery.
func (a *applier) progress(ctx context.Context) {
	t := time.NewTicker(a.cfg.ProgressEvery)
	defer t.Stop()
	last, lastAt := a.m.total(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := a.m.total()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			last, lastAt = n, now
			pending, lag, owned := a.m.snapshot()
			a.cfg.Log.Info("apply: progress", "member", a.cfg.Member, "applied", n, "events_per_s", int(rate),
				"pending", pending, "lag", lag.Round(time.Millisecond), "partitions", owned)
		}
	}
}

// knownTable returns a table as last checked, nil if not yet.
func (a *applier) knownTable(name string) *table {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tables[name]
}

func (a *applier) setTable(name string, t *table) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t == nil {
		delete(a.tables, name)
		return
	}
	a.tables[name] = t
}
