package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sources"
)

// ErrTooLarge means an event exceeds the largest message NATS accepts.
var ErrTooLarge = errors.New("event larger than the NATS max payload")

// ErrDeadLettered is what Emitter.Change returns for a row that went to
// the dead-letter subject instead of its partition (it wraps ErrTooLarge):
// a backfill then treats its key as one consumers must keep.
var ErrDeadLettered = fmt.Errorf("%w: sent to the dead-letter subject", ErrTooLarge)

// CheckpointStore is where the pipeline keeps its position.
type CheckpointStore interface {
	Load(ctx context.Context, source string) (checkpoint.Checkpoint, bool, error)
	Save(ctx context.Context, cp checkpoint.Checkpoint) error
}

// PipelineConfig wires one source to its stream.
type PipelineConfig struct {
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

// Transform rewrites changes before anything of them leaves the process.
type Transform interface {
	Change(c *sources.Change) (*sources.Change, error)
	// Table returns the shape t's changes are rewritten to.
	Table(t *sources.Table) (*sources.Table, error)
	// KeyOrderKept tells whether the rewritten keys of a table still sort
	// as the table's: chunk events state key ranges, so without it a
	// table's chunk events are left out.
	KeyOrderKept(t *sources.Table) bool
}

// Tap sees each change of the log, in order, before it is published. It
// may drop it (a change of sluice's own signal table) and may publish more
// through out, right where the change sits in the log.
type Tap interface {
	Change(ctx context.Context, c *sources.Change, out Emitter) (drop bool, err error)
}

// Emitter publishes extra events in log order, inside the transaction of
// the change being tapped (their message ids continue its indexes).
type Emitter interface {
	// Change publishes c like a change from the log.
	Change(ctx context.Context, c *sources.Change) error
	// Chunk publishes the chunk event on every partition subject of its
	// table, at position pos.
	Chunk(ctx context.Context, ch *Chunk, pos sources.Position) error
}

// Pipeline moves changes from a source to JetStream and checkpoints what
// JetStream has stored (DESIGN.md "Data flow").
type Pipeline struct {
	cfg   PipelineConfig
	src   sources.Source
	pub   *Publisher
	store CheckpointStore
	enc   *Encoder
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

// NewPipeline wires src to stream: it creates the publisher and reads the
// stream's state. js must be the JetStream context stream came from.
func NewPipeline(ctx context.Context, cfg PipelineConfig, src sources.Source, store CheckpointStore, js jetstream.JetStream, stream jetstream.Stream) (*Pipeline, error) {
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = 250 * time.Millisecond
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = time.Minute
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
		enc:   NewEncoder(cfg.SourceName, cfg.SourceKind, cfg.Database),
		log:   cfg.Log,
		subj:  make(map[*sources.Table][]string),
		open:  make(chan struct{}),
	}
	var pub *Publisher
	err := Retry(ctx, cfg.Log, "read the stream state", cfg.StartupTimeout, func(ctx context.Context) (err error) {
		pub, err = NewPublisher(ctx, js, stream, PublisherConfig{Window: cfg.Window, OnAcked: p.onAcked, OnStoreFull: cfg.Metrics.storeFull, Log: cfg.Log})
		return err
	})
	if err != nil {
		return nil, err
	}
	p.pub = pub
	return p, nil
}

// onAcked records a transaction boundary JetStream has fully stored.
func (p *Pipeline) onAcked(a Acked) {
	p.mu.Lock()
	p.acked.Position, p.acked.StreamSeq, p.acked.LastEvent = a.Pos, a.Seq, a.Time
	if a.Versions != nil {
		p.acked.SchemaVersions = a.Versions
	}
	p.mu.Unlock()
	p.cfg.Metrics.ackedTx(string(a.Pos), a.Time)
}

func (p *Pipeline) latest() checkpoint.Checkpoint {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked
}

// Run streams until ctx ends, then drains in-flight publishes, writes the
// final checkpoint and returns nil. It returns an error when the source
// fails for good or the stream cannot be written in order.
func (p *Pipeline) Run(ctx context.Context) error {
	var cp checkpoint.Checkpoint
	err := Retry(ctx, p.log, "read the checkpoint", p.cfg.StartupTimeout, func(ctx context.Context) (err error) {
		cp, _, err = p.store.Load(ctx, p.cfg.SourceName)
		return err
	})
	if err != nil {
		return err
	}
	cp.Source = p.cfg.SourceName
	p.acked = cp
	if cp.Position != "" {
		p.log.Info("resuming from checkpoint", "position", cp.Position, "stream_seq", cp.StreamSeq)
	} else {
		p.log.Info("no checkpoint yet: starting at the replication slot's position")
	}

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
	g.Go(func() error {
		<-gctx.Done()
		if ctx.Err() == nil {
			stopStream()
			return nil
		}
		p.stopping.Store(true)
		if !p.inTx.Load() {
			stopStream()
			return nil
		}
		t := time.NewTimer(p.cfg.BoundaryTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			p.log.Warn("stopping inside a transaction: it is replayed on restart (its stored messages are not published again)",
				"waited", p.cfg.BoundaryTimeout)
			stopStream()
		case <-sctx.Done():
		}
		return nil
	})
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
func (p *Pipeline) streamLoop(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		from := p.latest()
		// Mid-run, JetStream being between leaders is waited out for good:
		// the publisher does the same, and nothing is lost by waiting.
		var skip *StoredIDs
		err := Retry(ctx, p.log, "read the message ids stored after the checkpoint", time.Duration(math.MaxInt64),
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
		h := &handler{p: p, skip: skip, resumedSeq: from.StreamSeq, versions: from.SchemaVersions}
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
			if err := p.pub.Flush(ctx); err != nil {
				return nil
			}
			pos, gerr := p.cfg.OnGap(ctx, from.Position, err)
			// A failover loses the slot and, for a while, the source: the
			// repair is retried until the source answers; only other
			// errors (configuration, permissions) stop sluice.
			for try := 1; gerr != nil && errors.Is(gerr, sources.ErrDisconnected); try++ {
				wait := backoff(try)
				p.log.Warn("log position lost and the source is unreachable: the gap repair starts once it answers", "in", wait, "attempt", try, "error", gerr)
				if err := sleep(ctx, wait); err != nil {
					return nil
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
		wait := backoff(attempt + 1)
		p.log.Warn("source connection lost; reconnecting", "in", wait, "attempt", attempt+1, "error", err)
		p.cfg.Metrics.reconnect()
		// Everything handed over must be stored before the replay starts, so
		// the replay can tell what to skip.
		if err := p.pub.Flush(ctx); err != nil {
			return nil
		}
		if err := sleep(ctx, wait); err != nil {
			return nil
		}
	}
}

func (p *Pipeline) checkpointLoop(ctx context.Context, saved *checkpoint.Checkpoint) error {
	t := time.NewTicker(p.cfg.CheckpointInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := p.saveCheckpoint(ctx, saved); err != nil {
			if !Transient(err) {
				return err
			}
			// The next tick retries; until then the source keeps its log.
			p.log.Warn("checkpoint not written; retrying", "error", err)
		}
	}
}

// saveCheckpoint writes the latest stored boundary, then tells the source it
// may release the log up to it: in that order, so a crash between the two
// only replays.
func (p *Pipeline) saveCheckpoint(ctx context.Context, saved *checkpoint.Checkpoint) error {
	cp := p.latest()
	if cp.Position == "" || (cp.Position == saved.Position && cp.StreamSeq == saved.StreamSeq) {
		return nil
	}
	err := p.store.Save(ctx, cp)
	p.cfg.Metrics.checkpointSaved(err)
	if err != nil {
		return err
	}
	*saved = cp
	p.src.Ack(cp.Position)
	return nil
}

// subjects returns the partition subjects of a table shape.
func (p *Pipeline) subjects(t *sources.Table) ([]string, error) {
	if s, ok := p.subj[t]; ok {
		return s, nil
	}
	for _, tok := range []string{t.Schema, t.Name} {
		if !sources.SubjectToken(tok) {
			return nil, fmt.Errorf("table %s.%s: its name cannot be a NATS subject token (no '.', '*', '>' or whitespace); rename it or leave it out of source.tables", t.Schema, t.Name)
		}
	}
	base := p.cfg.Prefix + "." + p.cfg.SourceName + "." + t.Schema + "." + t.Name + "."
	s := make([]string, p.cfg.Partitions)
	for i := range s {
		s[i] = base + strconv.Itoa(i)
	}
	p.subj[t] = s
	return s, nil
}

// handler turns one Stream call's changes into messages.
type handler struct {
	p          *Pipeline
	txPos      sources.Position
	index      int
	skip       *StoredIDs
	key        []byte
	progressed bool
	// resumedSeq is the stream sequence of the checkpoint this Stream call
	// resumed from; published tells whether it has published anything yet.
	// Until it has, every transaction it replays was stored before (its
	// messages are skipped), and its checkpoint must not claim a sequence
	// beyond resumedSeq: the stream's last sequence covers later
	// transactions, whose ids a restart would then not read back.
	resumedSeq uint64
	published  bool
	// versions are the schema versions in force, by table; replaced, never
	// changed in place, as checkpoints share it. versionsMoved tells
	// whether they changed in the current transaction.
	versions      map[string]int
	versionsMoved bool
	inForceLast   *sources.Table
}

func (h *handler) Change(ctx context.Context, c *sources.Change) error {
	h.progressed = true
	if c.Pos != h.txPos {
		h.txPos, h.index = c.Pos, 0
		h.p.inTx.Store(true)
	}
	if t := h.p.cfg.Tap; t != nil {
		drop, err := t.Change(ctx, c, emitter{h})
		if drop || err != nil {
			return err
		}
	}
	if err := h.change(ctx, c); !errors.Is(err, ErrDeadLettered) {
		return err
	}
	return nil // recorded on the dead-letter subject; the log goes on
}

// emitter publishes what a Tap adds.
type emitter struct{ h *handler }

func (e emitter) Change(ctx context.Context, c *sources.Change) error { return e.h.change(ctx, c) }

func (e emitter) Chunk(ctx context.Context, ch *Chunk, pos sources.Position) error {
	h := e.h
	if t := h.p.cfg.Transform; t != nil {
		if !t.KeyOrderKept(ch.Table) {
			return nil
		}
		table, err := t.Table(ch.Table)
		if err != nil {
			return err
		}
		c := *ch
		c.Table = table
		ch = &c
	}
	if r := h.p.cfg.Schemas; r != nil {
		table, err := h.versioned(ctx, &sources.Change{Table: ch.Table, Pos: pos})
		if err != nil {
			return err
		}
		c := *ch
		c.Table = table
		ch = &c
	}
	subjects, err := h.p.subjects(ch.Table)
	if err != nil {
		return err
	}
	keep := make([][][]sources.Value, len(subjects))
	for _, k := range ch.Keep {
		h.key = AppendCanonicalKey(h.key[:0], k)
		p := Partition(h.key, len(subjects))
		keep[p] = append(keep[p], k)
	}
	for p, s := range subjects {
		data := h.p.enc.AppendChunkEvent(nil, ch, keep[p], time.Now())
		if err := h.publishData(ctx, s, pos, data); err != nil {
			return err
		}
	}
	return nil
}

func (h *handler) change(ctx context.Context, c *sources.Change) error {
	if t := h.p.cfg.Transform; t != nil {
		var err error
		if c, err = t.Change(c); err != nil {
			return err
		}
	}
	if h.p.cfg.Schemas != nil {
		table, err := h.versioned(ctx, c)
		if err != nil {
			return err
		}
		if table != c.Table {
			v := *c
			v.Table = table
			c = &v
		}
		h.inForce(table)
	}
	subjects, err := h.p.subjects(c.Table)
	if err != nil {
		return err
	}
	// A change whose message is already stored (a replay) was judged when
	// it was published: consumers have it, so a contract changed since
	// does not judge it again.
	if k := h.p.cfg.Contracts; k != nil && !h.skip.Has(h.peekID(c.Pos)) {
		if policy, reasons := k.Check(c); policy != "" {
			return h.breach(ctx, c, subjects, policy, reasons)
		}
	}
	if c.Op == sources.OpTruncate {
		// A truncate removes keys of every partition.
		for _, s := range subjects {
			if err := h.publish(ctx, s, c); err != nil {
				return err
			}
		}
		return nil
	}
	h.key = AppendCanonicalKey(h.key[:0], c.KeyValues())
	return h.publish(ctx, subjects[Partition(h.key, len(subjects))], c)
}

func (h *handler) publish(ctx context.Context, subject string, c *sources.Change) error {
	id := h.nextID(c.Pos)
	if h.skip.Has(id) {
		// Stored before a crash or reconnect; the replay must not repeat it.
		return nil
	}
	data := h.p.enc.AppendEvent(nil, c, time.Now())
	if max := h.p.cfg.MaxPayload; max > 0 && len(data)+len(id)+len(subject)+64 > max {
		return h.tooLarge(ctx, subject, id, c, len(data), max)
	}
	h.p.cfg.Metrics.event(c.Table.QualifiedName(), string(c.Op), partitionOf(subject))
	return h.send(ctx, subject, id, data)
}

// tooLarge puts a note of an event NATS cannot carry on the dead-letter
// subject, in the event's place in its transaction's numbering: its table,
// key, op, position and size, never a column value. The stream and any
// backfill go on; the operator raises the limit and backfills the key.
func (h *handler) tooLarge(ctx context.Context, subject, id string, c *sources.Change, size, limit int) error {
	key := AppendCanonicalKey(nil, c.KeyValues())
	table := c.Table.QualifiedName()
	h.p.cfg.Metrics.deadLetter("too_large")
	h.p.log.Error("event larger than the NATS max payload: sent to the dead-letter subject instead; raise nats.max_payload (or max_payload of your NATS servers), then backfill the row with sluice backfill --filter",
		"table", table, "key", string(key), "op", string(c.Op), "pos", string(c.Pos), "bytes", size, "limit", limit)
	if h.skip.Has(id) {
		return ErrDeadLettered
	}
	// The key as in events: an object in key-column order.
	obj := []byte{'{'}
	for i, v := range c.KeyValues() {
		if i > 0 {
			obj = append(obj, ',')
		}
		obj = appendQuoted(obj, c.Table.Columns[c.Table.Key[i]])
		obj = append(obj, ':')
		obj = append(obj, v...)
	}
	obj = append(obj, '}')
	msg, err := json.Marshal(struct {
		Reason  string          `json:"reason"`
		Table   string          `json:"table"`
		Key     json.RawMessage `json:"key"`
		Op      string          `json:"op"`
		Pos     string          `json:"pos"`
		Chunk   string          `json:"chunk,omitempty"`
		Subject string          `json:"subject"`
		Bytes   int             `json:"bytes"`
		Limit   int             `json:"limit"`
	}{"too_large", table, obj, string(c.Op), string(c.Pos), c.Chunk, subject, size, limit})
	if err != nil {
		return err
	}
	if err := h.send(ctx, h.p.cfg.Prefix+"."+h.p.cfg.SourceName+"._dlq", id, msg); err != nil {
		return err
	}
	return ErrDeadLettered
}

// partitionOf reads the partition from a subject's last token.
func partitionOf(subject string) int {
	n, _ := strconv.Atoi(subject[strings.LastIndexByte(subject, '.')+1:])
	return n
}

// publishData publishes an event that is not a row change (a chunk event).
func (h *handler) publishData(ctx context.Context, subject string, pos sources.Position, data []byte) error {
	id := h.nextID(pos)
	if h.skip.Has(id) {
		return nil
	}
	if max := h.p.cfg.MaxPayload; max > 0 && len(data)+len(id)+len(subject)+64 > max {
		return fmt.Errorf("%w: a chunk event on %s is %d bytes, the limit is %d: lower backfill.chunk_size or raise nats.max_payload",
			ErrTooLarge, subject, len(data), max)
	}
	return h.send(ctx, subject, id, data)
}

// nextID is the message id of the next message of the transaction at pos.
func (h *handler) nextID(pos sources.Position) string {
	id := h.peekID(pos)
	h.index++
	return id
}

// peekID is what nextID will return.
func (h *handler) peekID(pos sources.Position) string {
	if pos != h.txPos {
		h.txPos, h.index = pos, 0
	}
	return h.p.cfg.SourceName + ":" + string(pos) + ":" + strconv.Itoa(h.index)
}

// send publishes a message this Stream call produced (not one it skipped
// as stored before).
func (h *handler) send(ctx context.Context, subject, id string, data []byte) error {
	h.published = true
	return h.p.pub.Publish(ctx, subject, id, data)
}

func (h *handler) Commit(ctx context.Context, c sources.Commit) error {
	h.progressed = true
	h.txPos, h.index = "", 0
	h.p.cfg.Metrics.handedTx(string(c.Pos), c.Time)
	a := Acked{Pos: c.Pos, Time: c.Time}
	if h.versionsMoved {
		a.Versions, h.versionsMoved = h.versions, false
	}
	if !h.published {
		a.Capped, a.MaxSeq = true, h.resumedSeq
	}
	err := h.p.pub.Commit(ctx, a)
	// Cleared before stopping is read; the stopper sets stopping before it
	// reads inTx: one of the two ends the stream at this boundary.
	h.p.inTx.Store(false)
	if h.p.stopping.Load() {
		h.p.stopStream()
	}
	return err
}

// Flush waits until every event handed to the publisher so far is stored
// in JetStream.
func (p *Pipeline) Flush(ctx context.Context) error { return p.pub.Flush(ctx) }

// Opened is the source telling that its Stream call has the log open.
func (h *handler) Opened() { h.p.setOpen(true) }

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

// inForce records the version of t as the one in force for its table,
// for the checkpoint (checkpoint.Checkpoint.SchemaVersions).
func (h *handler) inForce(t *sources.Table) {
	if t == h.inForceLast {
		return
	}
	h.inForceLast = t
	qn := t.QualifiedName()
	if v, ok := h.versions[qn]; ok && v == t.Version {
		return
	}
	m := make(map[string]int, len(h.versions)+1)
	for k, v := range h.versions {
		m[k] = v
	}
	m[qn] = t.Version
	h.versions, h.versionsMoved = m, true
}

// versioned returns the registered version of c's table shape. A shape
// new to a table that had others is announced first: its schema-change
// event is stored before the shape is registered and before any change of
// it is published, so a crash in between announces it again under the
// same message id.
func (h *handler) versioned(ctx context.Context, c *sources.Change) (*sources.Table, error) {
	r := h.p.cfg.Schemas
	table, ch, err := r.Observe(ctx, c.Table)
	if err != nil || ch == nil {
		return table, err
	}
	body, err := ch.EventBody()
	if err != nil {
		return nil, err
	}
	at := *c
	at.Table = table
	subject := h.p.cfg.Prefix + "." + h.p.cfg.SourceName + "." + table.Schema + "." + table.Name + "._schema"
	// Not numbered in its transaction: a replay after the shape is
	// registered publishes no event, and must number the changes alike.
	id := h.p.cfg.SourceName + ":schema:" + table.QualifiedName() + ":" + strconv.Itoa(ch.New.Version)
	event := h.p.enc.AppendSchemaEvent(nil, &at, body, time.Now())
	if !h.skip.Has(id) {
		if err := h.send(ctx, subject, id, event); err != nil {
			return nil, err
		}
	}
	if k := h.p.cfg.Contracts; k != nil {
		if policy, reasons := k.CheckShape(ch.Old, ch.New); len(reasons) > 0 {
			if err := h.breakingShape(ctx, table, policy, reasons, subject, id, event); err != nil {
				return nil, err
			}
		}
	}
	if err := h.p.pub.Flush(ctx); err != nil {
		return nil, err
	}
	if err := r.Register(ctx, ch); err != nil {
		return nil, err
	}
	h.p.log.Info("table shape changed: schema-change event published", "table", table.QualifiedName(),
		"from_version", ch.Old.Version, "to_version", ch.New.Version, "subject", subject)
	return table, nil
}

// breach handles an event that breaks its contract. The dead-letter
// message takes the event's place in its transaction's numbering (dlq),
// or follows it under the event's id with ":dlq" (warn), so replays
// number everything alike; halt stops before the event, so the checkpoint
// stays before its transaction.
func (h *handler) breach(ctx context.Context, c *sources.Change, subjects []string, policy string, reasons []string) error {
	table := c.Table.QualifiedName()
	key := string(AppendCanonicalKey(nil, c.KeyValues()))
	if f := h.p.cfg.OnBreach; f != nil {
		f(table, policy)
	}
	if policy == schemas.Halt {
		return fmt.Errorf("%w: %s key %s at %s: %s. sluice stops before publishing it (contracts.%s.policy is halt); the checkpoint stays before this transaction: fix the row or the contract, then start sluice again",
			schemas.ErrContract, table, key, c.Pos, strings.Join(reasons, "; "), table)
	}
	subject := subjects[Partition(AppendCanonicalKey(h.key[:0], c.KeyValues()), len(subjects))]
	event := h.p.enc.AppendEvent(nil, c, time.Now())
	h.p.log.Warn("event breaks its data contract", "table", table, "key", key, "policy", policy, "reasons", strings.Join(reasons, "; "))
	var id string
	if policy == schemas.Warn {
		if err := h.publish(ctx, subject, c); err != nil {
			return err
		}
		id = h.p.cfg.SourceName + ":" + string(c.Pos) + ":" + strconv.Itoa(h.index-1) + ":dlq"
	} else {
		id = h.nextID(c.Pos)
	}
	return h.publishDLQ(ctx, id, table, policy, reasons, subject, event)
}

// breakingShape reports a new shape that breaks its table's contract,
// before any change of that shape is published: in the log, on the
// dead-letter subject, and, under halt, by stopping.
func (h *handler) breakingShape(ctx context.Context, table *sources.Table, policy string, reasons []string, subject, id string, event []byte) error {
	qn := table.QualifiedName()
	if f := h.p.cfg.OnBreach; f != nil {
		f(qn, policy)
	}
	h.p.log.Error("breaking schema change: the new shape breaks the table's data contract", "table", qn,
		"version", table.Version, "policy", policy, "reasons", strings.Join(reasons, "; "))
	if policy == schemas.Halt {
		return fmt.Errorf("%w: %s version %d: %s. sluice stops before publishing a change of this shape (contracts.%s.policy is halt): change the contract to the new shape, then start sluice again",
			schemas.ErrContract, qn, table.Version, strings.Join(reasons, "; "), qn)
	}
	return h.publishDLQ(ctx, id+":dlq", qn, policy, reasons, subject, event)
}

// publishDLQ publishes a dead-letter message: the contract, the policy,
// the reasons, the subject the event was for and the event itself.
func (h *handler) publishDLQ(ctx context.Context, id, table, policy string, reasons []string, subject string, event []byte) error {
	if h.skip.Has(id) {
		return nil
	}
	msg, err := json.Marshal(struct {
		Contract string          `json:"contract"`
		Policy   string          `json:"policy"`
		Reasons  []string        `json:"reasons"`
		Subject  string          `json:"subject"`
		Event    json.RawMessage `json:"event"`
	}{table, policy, reasons, subject, event})
	if err != nil {
		return err
	}
	return h.send(ctx, h.p.cfg.Prefix+"."+h.p.cfg.SourceName+"._dlq", id, msg)
}
