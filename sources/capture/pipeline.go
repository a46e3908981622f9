// Package capture is sluice's capture engine: it takes the changes a
// source reads, runs them through the backfill tap, the privacy transform,
// the schema registry and the data contracts, partitions and publishes
// them through sink's ordered publisher, tracks which transactions
// JetStream has stored, checkpoints them and acknowledges them to the
// source (DESIGN.md "Data flow").
package capture

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// Config wires one source to its stream.
type Config struct {
	SourceName string
	SourceKind string // "postgres", "mysql"
	Database   string // the event's source.db
	Prefix     string
	Partitions int
	MaxPayload int // bytes; a row event above it goes to the dead-letter subject
	Window     int // most messages in flight
	// CheckpointInterval is how often the acknowledged position is saved
	// and acknowledged to the database.
	CheckpointInterval time.Duration
	// DrainTimeout bounds how long shutdown waits for in-flight publishes.
	DrainTimeout time.Duration
	// BoundaryTimeout bounds how long a clean stop waits for the source
	// to reach the end of the transaction it is reading.
	BoundaryTimeout time.Duration
	// StartupTimeout bounds how long start-up waits for JetStream (a
	// cluster electing its leaders) before it gives up with an error.
	StartupTimeout time.Duration
	// Tap, when set, sees every change before it is published (backfill
	// watermarks and the chunks they release).
	Tap Tap
	// OnGap, when set, repairs a lost log position (sources.ErrLogLost):
	// it records the gap, arranges its backfill and returns the position
	// streaming resumes from. Without it a lost position stops the pipeline.
	OnGap func(ctx context.Context, lost sources.Position, cause error) (sources.Position, error)
	// Transform, when set, rewrites every change (log or backfill) before
	// it is partitioned and encoded: privacy policies.
	Transform Transform
	// Schemas, when set, versions every table shape published and
	// publishes a schema-change event before the first change of a new
	// shape.
	Schemas *schemas.Registry
	// Contracts, when set, checks every row against its table's contract
	// and sends breaking events to <prefix>.<source>._dlq (warn, dlq) or
	// stops the pipeline before publishing them (halt).
	Contracts *schemas.Contracts
	// OnBreach, when set, counts contract breaches.
	OnBreach func(table, policy string)
	// Metrics, when set, are kept up to date.
	Metrics *Metrics
	Log     *slog.Logger
}

// Source is what the engine reads from a driver's sources.Source.
type Source interface {
	Stream(ctx context.Context, from sources.Position, h sources.Handler) error
	Ack(pos sources.Position)
	Start() sources.Position
}

// Pipeline moves changes from a source to JetStream and checkpoints what
// JetStream has stored (DESIGN.md "Data flow").
type Pipeline struct {
	cfg   Config
	src   Source
	pub   *sink.Publisher
	store CheckpointStore
	enc   *sink.Encoder
	log   *slog.Logger
	subj  map[*sources.Table][]string // subjects per partition
	mu    sync.Mutex
	acked checkpoint.Checkpoint // latest boundary JetStream has stored
	// open is closed while a Stream call has the log open; a new channel
	// replaces it when the call ends.
	open   chan struct{}
	isOpen bool
	// inTx tells whether the source has handed over part of a transaction
	// and not yet its commit; stopping, that a clean stop waits for that
	// commit, after which stopStream ends the source's Stream call.
	inTx, stopping atomic.Bool
	stopStream     func()
}

// The defaults of the settings sluice's config file has too (its
// checkpoint.interval and nats.startup_timeout): set here, read there.
const (
	// DefaultCheckpointInterval bounds what a crash replays to a quarter
	// second of changes, at a checkpoint write per interval.
	DefaultCheckpointInterval = 250 * time.Millisecond
	// DefaultStartupTimeout is how long a start waits out JetStream
	// electing its leaders before it gives up.
	DefaultStartupTimeout = time.Minute
)

// New wires src to stream: it creates the publisher and reads the
// stream's state. js must be the JetStream context stream came from.
func New(ctx context.Context, cfg Config, src Source, store CheckpointStore, js jetstream.JetStream, stream jetstream.Stream) (*Pipeline, error) {
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultStartupTimeout
	}
	if cfg.BoundaryTimeout <= 0 {
		// Well inside a container's usual 30 s grace period.
		cfg.BoundaryTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	p := &Pipeline{
		cfg:   cfg,
		src:   src,
		store: store,
		enc:   sink.NewEncoder(cfg.SourceName, cfg.SourceKind, cfg.Database),
		log:   cfg.Log,
		subj:  make(map[*sources.Table][]string),
		open:  make(chan struct{}),
	}
	var pub *sink.Publisher
	err := sink.Retry(ctx, cfg.Log, "read the stream state", cfg.StartupTimeout, func(ctx context.Context) (err error) {
		pub, err = sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Window: cfg.Window, OnAcked: p.onAcked, OnStoreFull: cfg.Metrics.storeFull, Log: cfg.Log})
		return err
	})
	if err != nil {
		return nil, err
	}
	p.pub = pub
	return p, nil
}

// Run streams until ctx ends, then drains in-flight publishes, writes the
// final checkpoint and returns nil. It returns an error when the source
// fails for good or the stream cannot be written in order.
func (p *Pipeline) Run(ctx context.Context) error {
	var cp checkpoint.Checkpoint
	err := sink.Retry(ctx, p.log, "read the checkpoint", p.cfg.StartupTimeout, func(ctx context.Context) (err error) {
		cp, _, err = p.store.Load(ctx, p.cfg.SourceName)
		return err
	})
	if err != nil {
		return err
	}
	cp.Source = p.cfg.SourceName
	switch start := p.src.Start(); {
	case cp.Position != "":
		p.log.Info("resuming from checkpoint", "position", cp.Position, "stream_seq", cp.StreamSeq)
	case start != "":
		// The database keeps no bookmark for us: until this is stored, a
		// crash would restart at the log's end then, losing what was
		// committed in between.
		cp.Position = start
		err := sink.Retry(ctx, p.log, "write the first checkpoint", p.cfg.StartupTimeout, func(ctx context.Context) error {
			return p.store.Save(ctx, cp)
		})
		if err != nil {
			return err
		}
		p.log.Info("no checkpoint yet: the first one is where capture starts", "position", start)
	default:
		p.log.Info("no checkpoint yet: starting at the replication slot's position")
	}
	p.acked = cp

	// The publisher outlives ctx so that shutdown can drain it.
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer stopPub()
	g, gctx := errgroup.WithContext(ctx)
	pubDone := make(chan error, 1)
	go func() { pubDone <- p.pub.Run(pubCtx) }()
	pubFailed := false
	g.Go(func() error {
		select {
		case err := <-pubDone:
			pubFailed = true
			return err
		case <-gctx.Done():
			return nil
		}
	})
	saved := cp
	g.Go(func() error { return p.checkpointLoop(gctx, &saved) })
	// A clean stop (ctx ending) lets the source read on to the end of the
	// transaction it is in, so the final checkpoint covers every message
	// stored: stopped between a message and its commit, the restart would
	// replay that transaction, and judge it again by what may by then be a
	// changed contract. A failure stops the source at once.
	sctx, stopStream := context.WithCancel(context.WithoutCancel(gctx))
	defer stopStream()
	p.stopStream = stopStream
	g.Go(func() error { return p.stopAtBoundary(ctx, gctx, sctx) })
	g.Go(func() error { return p.streamLoop(sctx) })
	err = g.Wait()

	// Whatever stopped us, let in-flight publishes land and record where we
	// are, so the next start replays as little as possible.
	dctx, cancel := context.WithTimeout(context.Background(), p.cfg.DrainTimeout)
	defer cancel()
	if !pubFailed {
		if ferr := p.pub.Flush(dctx); ferr != nil {
			p.log.Warn("in-flight publishes did not all finish; they will be replayed on restart", "error", ferr)
		}
	}
	if serr := p.saveCheckpoint(dctx, &saved); serr != nil && err == nil {
		err = serr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		p.log.Error("stopped by an error", "position", saved.Position, "stream_seq", saved.StreamSeq, "error", err)
		return err
	}
	p.log.Info("stopped", "position", saved.Position, "stream_seq", saved.StreamSeq)
	return nil
}

// streamLoop runs the source, resuming after transient failures from the
// last position JetStream has stored.
//
// ctx ends only when Run's group stops: a clean stop, or a sibling (the
// publisher, the checkpoint loop) failed and reports its own error. A
// flush or a wait cut short by it therefore returns nil, leaving the
// reason to Run.
func (p *Pipeline) streamLoop(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		from := p.latest()
		// Mid-run, JetStream being between leaders is waited out for good:
		// the publisher does the same, and nothing is lost by waiting.
		var skip *sink.StoredIDs
		err := sink.Retry(ctx, p.log, "read the message ids stored after the checkpoint", time.Duration(math.MaxInt64),
			func(ctx context.Context) (err error) {
				skip, err = p.pub.IDsAfter(ctx, from.StreamSeq)
				return err
			})
		if err != nil {
			return err
		}
		if skip.Len() > 0 {
			p.log.Info("replaying from the checkpoint; messages already stored after it are not published again",
				"position", from.Position, "stored_after_checkpoint", skip.Len())
		}
		h := newHandler(p, skip, from)
		err = p.src.Stream(ctx, from.Position, h)
		p.setOpen(false)
		// A transaction cut short is read again from its start.
		p.inTx.Store(false)
		if ctx.Err() != nil || p.stopping.Load() {
			return nil
		}
		if errors.Is(err, sources.ErrLogLost) && p.cfg.OnGap != nil {
			// Whatever was handed over must be stored before the position
			// moves past it.
			if p.pub.Flush(ctx) != nil {
				return nil // ctx ended: see above
			}
			pos, gerr := p.cfg.OnGap(ctx, from.Position, err)
			// A failover loses the slot and, for a while, the source: the
			// repair is retried until the source answers; only other
			// errors (configuration, permissions) stop sluice.
			for try := 1; gerr != nil && errors.Is(gerr, sources.ErrDisconnected); try++ {
				wait := sink.Backoff(try)
				p.log.Warn("log position lost and the source is unreachable: the gap repair starts once it answers", "in", wait, "attempt", try, "error", gerr)
				if sink.Sleep(ctx, wait) != nil {
					return nil // ctx ended: see above
				}
				pos, gerr = p.cfg.OnGap(ctx, from.Position, err)
			}
			if gerr != nil {
				return gerr
			}
			p.mu.Lock()
			p.acked.Position = pos
			p.mu.Unlock()
			attempt = -1
			continue
		}
		if !errors.Is(err, sources.ErrDisconnected) {
			return err
		}
		if h.progressed {
			attempt = 0
		}
		wait := sink.Backoff(attempt + 1)
		p.log.Warn("source connection lost; reconnecting", "in", wait, "attempt", attempt+1, "error", err)
		p.cfg.Metrics.reconnect()
		// Everything handed over must be stored before the replay starts, so
		// the replay can tell what to skip.
		if p.pub.Flush(ctx) != nil {
			return nil // ctx ended: see above
		}
		if sink.Sleep(ctx, wait) != nil {
			return nil // ctx ended: see above
		}
	}
}

// Flush waits until every event handed to the publisher so far is stored
// in JetStream.
func (p *Pipeline) Flush(ctx context.Context) error { return p.pub.Flush(ctx) }

func (p *Pipeline) setOpen(open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case open && !p.isOpen:
		close(p.open)
	case !open && p.isOpen:
		p.open = make(chan struct{})
	}
	p.isOpen = open
	p.cfg.Metrics.setOpen(open)
}

// WaitStreaming waits until the source has the log open, so that what is
// committed from then on will come through it (backfill watermarks).
func (p *Pipeline) WaitStreaming(ctx context.Context) error {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
