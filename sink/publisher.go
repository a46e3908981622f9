package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sources"
)

// ErrForeignWriter means something other than this sluice published to its
// stream, so the stream's order can no longer be vouched for.
var ErrForeignWriter = errors.New("another writer is publishing to the stream")

// Acked is a transaction boundary whose changes JetStream has all stored.
type Acked struct {
	Pos  sources.Position
	Seq  uint64    // stream sequence of the last message up to Pos
	Time time.Time // commit time of the transaction
	// Capped, with MaxSeq, caps Seq: a transaction replayed after a
	// restart whose messages were all stored before it (and skipped) must
	// not be vouched for at the stream's last sequence, which lies after
	// messages of later transactions; the checkpoint's sequence it resumed
	// from is a bound below every one of them.
	Capped bool
	MaxSeq uint64
	// Versions, when set, are the schema versions in force at Pos, by
	// "schema.table"; nil when none changed since the previous boundary.
	Versions map[string]int
}

// Publisher publishes to one stream, of which it must be the only writer.
//
// Order is the whole point: each message is published with the stream
// sequence it must land on (Nats-Expected-Last-Sequence), so JetStream
// rejects any message whose predecessor is missing. What the stream holds is
// therefore always a prefix of what was published, in publish order, and a
// failed publish is repaired by reading the stream's last sequence and
// republishing everything after it. Nothing is skipped and per-key order
// survives retries, leader elections and reconnects.
//
// The same chain lets acks be batched: only the last message of each burst
// (and every ackEvery-th) asks for an ack. A stored message proves that its
// predecessor was stored, so one ack vouches for every message before it,
// and a message lost or refused without an ack breaks the chain, which the
// next ack reports as an error.
type Publisher struct {
	js       jetstream.JetStream
	nc       *nats.Conn
	stream   jetstream.Stream
	window   int
	ackEvery int
	in       chan *entry
	onAcked  func(Acked)
	log      *slog.Logger
	// Owned by Run once it starts.
	unacked   *nats.Msg // reused by every publish that asks for no ack
	storedSeq uint64    // last sequence the stream is known to hold
	nextSeq   uint64    // sequence the next published message must get
	failures  int       // consecutive failed publishes
	waiting   []*entry  // messages that asked for an ack not yet received, in order
	sinceAck  int       // messages published since the last one that asked for an ack
	// fullSince is when the store first refused a publish for lack of
	// storage, zero while it takes them; fullLogged when that was last said.
	fullSince, fullLogged time.Time
	onStoreFull           func(error)
}

// entry is a message to publish, or a marker that resolves once every
// message queued before it is stored.
type entry struct {
	subject string // "" for a marker
	data    []byte
	id      string
	seq     uint64                 // stream sequence the message must get
	fut     jetstream.PubAckFuture // set while an ack asked for is outstanding
	acked   *Acked                 // commit marker
	done    chan struct{}          // flush marker
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Window is the most messages in flight (published, not yet acked).
	Window int
	// OnAcked is called, in order and from Run's goroutine, for every
	// transaction boundary once everything before it is stored.
	OnAcked func(Acked)
	// OnStoreFull, when set, is told when JetStream starts refusing
	// publishes for lack of storage (err set) and when it takes them again
	// (err nil).
	OnStoreFull func(err error)
	Log         *slog.Logger
}

// DefaultWindow is how many publishes may await their acknowledgement
// (stream.window): enough to keep a replicated stream busy.
const DefaultWindow = 4096

// NewPublisher prepares publishing to stream, starting after its current
// last sequence.
func NewPublisher(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, cfg PublisherConfig) (*Publisher, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream state: %w", err)
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	return &Publisher{
		js:          js,
		nc:          js.Conn(),
		stream:      stream,
		window:      cfg.Window,
		ackEvery:    max(cfg.Window/16, 1),
		in:          make(chan *entry, 1024),
		onStoreFull: cfg.OnStoreFull,
		onAcked:     cfg.OnAcked,
		log:         cfg.Log,
		storedSeq:   info.State.LastSeq,
		nextSeq:     info.State.LastSeq + 1,
		unacked: &nats.Msg{Header: nats.Header{
			jetstream.MsgIDHeader:           []string{""},
			jetstream.ExpectedLastSeqHeader: []string{""},
		}},
	}, nil
}

// Publish queues one message. It blocks while the in-flight window is full.
func (p *Publisher) Publish(ctx context.Context, subject, id string, data []byte) error {
	if subject == "" {
		return errors.New("publish: empty subject") // would read as a marker
	}
	return p.enqueue(ctx, &entry{subject: subject, data: data, id: id})
}

// Commit queues a transaction boundary; OnAcked reports it once stored.
func (p *Publisher) Commit(ctx context.Context, a Acked) error {
	return p.enqueue(ctx, &entry{acked: &a})
}

// Flush waits until every message queued so far is stored. It fails only
// when ctx ends, with ctx's error: should Run stop, Flush waits for ctx,
// and Run's own error says why.
func (p *Publisher) Flush(ctx context.Context) error {
	done := make(chan struct{})
	if err := p.enqueue(ctx, &entry{done: done}); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Publisher) enqueue(ctx context.Context, e *entry) error {
	select {
	case p.in <- e:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run publishes queued messages until ctx ends. It returns an error only
// when the stream's order cannot be vouched for (ErrForeignWriter).
func (p *Publisher) Run(ctx context.Context) error {
	var q []*entry // in queue order: messages in flight and markers
	inflight := 0
	for {
		// Markers at the head have nothing left to wait for.
		for len(q) > 0 && !q[0].isMsg() {
			p.resolveMarker(q[0])
			q[0] = nil
			q = q[1:]
		}
		var in chan *entry
		if inflight < p.window {
			in = p.in
		}
		var okc <-chan *jetstream.PubAck
		var errc <-chan error
		if len(p.waiting) > 0 {
			okc, errc = p.waiting[0].fut.Ok(), p.waiting[0].fut.Err()
		}
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-in:
			var n int
			q, n = p.take(e, q, inflight)
			inflight += n
			continue
		case ack := <-okc:
			e := p.pop()
			if !ack.Duplicate && ack.Sequence == e.seq {
				p.failures = 0
				p.storeRoom()
				var n int
				q, n = p.stored(q, e.seq)
				inflight -= n
				continue
			}
			if ack.Duplicate && len(q) > 0 && q[0] == e {
				// Stored long ago under this id (a replay that no checkpoint
				// covered): it is in the stream, so it counts as delivered,
				// but the messages behind it were sent expecting its sequence.
				p.log.Warn("message already in the stream; dropped as duplicate",
					"msg_id", e.id, "seq", ack.Sequence)
				q[0] = nil
				q = q[1:]
			} else if !ack.Duplicate {
				p.log.Warn("stream sequence differs from prediction; resynchronising",
					"msg_id", e.id, "want_seq", e.seq, "got_seq", ack.Sequence)
			}
			q, err = p.repair(ctx, q)
		case perr := <-errc:
			e := p.pop()
			p.failures++
			if StoreFull(perr) {
				p.storeFull(perr)
			} else {
				p.log.Warn("publish failed; republishing from the stream's last stored message",
					"msg_id", e.id, "subject", e.subject, "attempt", p.failures, "error", perr)
			}
			if err = Sleep(ctx, Backoff(p.failures)); err == nil {
				q, err = p.repair(ctx, q)
			}
		}
		if err != nil {
			return err
		}
		inflight = countMessages(q)
	}
}

// take queues e and whatever else is already waiting, as far as the window
// allows, and publishes their messages: the burst's last message asks for an
// ack, so a marker at its end resolves without waiting for more. It returns
// the queue and how many messages it published.
func (p *Publisher) take(e *entry, q []*entry, inflight int) ([]*entry, int) {
	from := len(q)
	q = append(q, e)
	n := 0
	if e.isMsg() {
		n++
	}
drain:
	for inflight+n < p.window {
		select {
		case e := <-p.in:
			q = append(q, e)
			if e.isMsg() {
				n++
			}
		default:
			break drain
		}
	}
	left := n
	for _, e := range q[from:] {
		if !e.isMsg() {
			continue
		}
		left--
		p.publish(e, left == 0 || p.sinceAck+1 >= p.ackEvery)
	}
	return q, n
}

// pop takes the oldest outstanding ack request, whose future has settled.
func (p *Publisher) pop() *entry {
	e := p.waiting[0]
	p.waiting[0] = nil
	p.waiting = p.waiting[1:]
	e.fut = nil
	return e
}

// stored drops the queued messages up to sequence seq, which the stream
// holds, resolving the markers between them in order. It returns the queue
// and how many messages it dropped.
func (p *Publisher) stored(q []*entry, seq uint64) ([]*entry, int) {
	n := 0
	for len(q) > 0 && (!q[0].isMsg() || q[0].seq <= seq) {
		if !q[0].isMsg() {
			p.resolveMarker(q[0])
		} else {
			p.storedSeq = q[0].seq
			n++
		}
		q[0] = nil
		q = q[1:]
	}
	return q, n
}

// repair brings the queue in line with what the stream holds after a failed
// or surprising publish: it lets every publish in flight settle, reads the
// stream's last sequence, drops the queued messages the stream already has
// (a prefix, thanks to the sequence guard) and republishes the rest in order.
func (p *Publisher) repair(ctx context.Context, q []*entry) ([]*entry, error) {
	for len(p.waiting) > 0 {
		// Each future settles within the async-publish ack timeout.
		select {
		case <-p.waiting[0].fut.Ok():
		case <-p.waiting[0].fut.Err():
		case <-ctx.Done():
			return q, ctx.Err()
		}
		p.pop()
	}
	var last uint64
	for attempt := 1; ; attempt++ {
		info, err := p.stream.Info(ctx)
		if err == nil {
			last = info.State.LastSeq
			break
		}
		p.log.Warn("cannot read stream state; retrying", "attempt", attempt, "error", err)
		if err := Sleep(ctx, Backoff(attempt)); err != nil {
			return q, err
		}
	}
	if last < p.storedSeq {
		return q, fmt.Errorf("%w: stream's last sequence went back from %d to %d (was it purged or recreated?)",
			ErrForeignWriter, p.storedSeq, last)
	}
	if last > p.storedSeq {
		// The stored tail must be ours: check the id at the last sequence.
		var want string
		for _, e := range q {
			if e.isMsg() && e.seq == last {
				want = e.id
			}
		}
		var raw *jetstream.RawStreamMsg
		for attempt := 1; ; attempt++ {
			var err error
			if raw, err = p.stream.GetMsg(ctx, last); err == nil {
				break
			} else if !Transient(err) {
				return q, fmt.Errorf("read stream message %d: %w", last, err)
			}
			if err := Sleep(ctx, Backoff(attempt)); err != nil {
				return q, err
			}
		}
		if got := raw.Header.Get(jetstream.MsgIDHeader); want == "" || got != want {
			return q, fmt.Errorf("%w: sequence %d holds message id %q, expected %q; run one sluice per source and stream",
				ErrForeignWriter, last, got, want)
		}
	}
	// Resolve what is stored, in order, then republish the rest, each
	// asking for its ack: repairs are rare, and a duplicate among them
	// must show as such rather than as a broken chain.
	q, _ = p.stored(q, last)
	p.storedSeq = last
	p.nextSeq = last + 1
	for _, e := range q {
		if e.isMsg() {
			p.publish(e, true)
		}
	}
	return q, nil
}

// publish sends e with the stream sequence it must land on, so JetStream
// refuses it unless every earlier message is stored. Without ack, it is
// sent without a reply subject and JetStream answers nothing.
func (p *Publisher) publish(e *entry, ack bool) {
	e.seq = p.nextSeq
	p.nextSeq++
	var err error
	if !ack {
		// PublishMsg copies the message into the connection's buffer, so
		// one message and header map serve every publish without an ack:
		// a map per message was the publisher's largest allocation.
		m := p.unacked
		m.Subject, m.Data = e.subject, e.data
		m.Header[jetstream.MsgIDHeader][0] = e.id
		m.Header[jetstream.ExpectedLastSeqHeader][0] = strconv.FormatUint(e.seq-1, 10)
		err = p.nc.PublishMsg(m)
		m.Data = nil
		if err == nil {
			p.sinceAck++
			return
		}
	}
	// The async publish keeps its message in the future it returns.
	m := &nats.Msg{Subject: e.subject, Data: e.data, Header: nats.Header{jetstream.MsgIDHeader: []string{e.id}}}
	if ack {
		e.fut, err = p.js.PublishMsgAsync(m, jetstream.WithExpectLastSequence(e.seq-1))
	}
	if err != nil {
		// Not even sent (connection closed, too many pending): a future that
		// fails at once sends it through repair like any other failure.
		e.fut = newFailedFuture(m, err)
	}
	p.waiting = append(p.waiting, e)
	p.sinceAck = 0
}

// isMsg tells a message from a marker.
func (e *entry) isMsg() bool { return e.subject != "" }

func (p *Publisher) resolveMarker(e *entry) {
	switch {
	case e.acked != nil:
		e.acked.Seq = p.storedSeq
		if e.acked.Capped && e.acked.MaxSeq < e.acked.Seq {
			e.acked.Seq = e.acked.MaxSeq
		}
		if p.onAcked != nil {
			p.onAcked(*e.acked)
		}
	case e.done != nil:
		close(e.done)
	}
}

func countMessages(q []*entry) int {
	n := 0
	for _, e := range q {
		if e.isMsg() {
			n++
		}
	}
	return n
}

// failedFuture is the future of a publish that could not be sent.
type failedFuture struct {
	msg *nats.Msg
	err chan error
}

func newFailedFuture(m *nats.Msg, err error) failedFuture {
	f := failedFuture{msg: m, err: make(chan error, 1)}
	f.err <- err
	return f
}

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error            { return f.err }
func (f failedFuture) Msg() *nats.Msg               { return f.msg }

// StoreFull tells whether JetStream refused a publish for lack of
// storage: the account's limit (nats.max_store), the server's, or the disk.
// The database keeps its log meanwhile, so waiting loses nothing.
func StoreFull(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jsErrCodeAccountResourcesExceeded, jsErrCodeStorageResourcesExceeded, jsErrCodeInsufficientResources:
			return true
		}
	}
	return err != nil && strings.Contains(err.Error(), "no space left on device")
}

// nats-server's codes for a store without room that nats.go does not name.
const (
	jsErrCodeAccountResourcesExceeded jetstream.ErrorCode = 10002
	jsErrCodeInsufficientResources    jetstream.ErrorCode = 10023
	jsErrCodeStorageResourcesExceeded jetstream.ErrorCode = 10047
)

// storeFullLogEvery spaces the store-full warnings: the retries behind
// them run every few seconds for as long as the store is full.
const storeFullLogEvery = time.Minute

// storeFull records a publish refused for lack of storage: sluice keeps
// its position and retries; it says so once a minute, not per retry.
func (p *Publisher) storeFull(err error) {
	now := time.Now()
	if p.fullSince.IsZero() {
		p.fullSince = now
		if f := p.onStoreFull; f != nil {
			f(err)
		}
	}
	if now.Sub(p.fullLogged) >= storeFullLogEvery {
		p.fullLogged = now
		p.log.Warn("JetStream store full: sluice keeps its position and retries until there is room; the database keeps the log meanwhile. Free space on the store's disk, or raise nats.max_store (or the stream's limits) and restart",
			"since", p.fullSince.UTC().Format(time.RFC3339), "error", err)
	}
}

// storeRoom records a publish stored after the store was full.
func (p *Publisher) storeRoom() {
	if p.fullSince.IsZero() {
		return
	}
	p.log.Info("JetStream store has room again: publishing resumed", "full_for", time.Since(p.fullSince).Round(time.Second).String())
	p.fullSince, p.fullLogged = time.Time{}, time.Time{}
	if f := p.onStoreFull; f != nil {
		f(nil)
	}
}

// IDsAfter returns the message ids the stream holds after sequence seq: the
// messages stored after the last checkpoint, which a replay must not repeat.
// Reading them back makes exactly-once independent of the duplicate window.
func (p *Publisher) IDsAfter(ctx context.Context, seq uint64) (*StoredIDs, error) {
	info, err := p.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream state: %w", err)
	}
	last := info.State.LastSeq
	ids := newStoredIDs()
	if last <= seq || info.State.Msgs == 0 {
		return ids, nil
	}
	start := max(seq+1, info.State.FirstSeq)
	c, err := p.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("read stored message ids: %w", err)
	}
	idle := 0
	for {
		batch, err := c.FetchNoWait(1000)
		if err != nil {
			return nil, fmt.Errorf("read stored message ids: %w", err)
		}
		n := 0
		var msgSeq uint64
		for m := range batch.Messages() {
			n++
			if id := m.Headers().Get(jetstream.MsgIDHeader); id != "" {
				ids.add(id)
			}
			if md, err := m.Metadata(); err == nil {
				msgSeq = md.Sequence.Stream
			}
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read stored message ids: %w", err)
		}
		if msgSeq >= last {
			return ids, nil
		}
		if n > 0 {
			idle = 0
			continue
		}
		// Messages at the end may have been deleted by an operator, so an
		// empty stream tail ends the read after a short grace.
		if idle++; idle > 100 {
			return ids, nil
		}
		if err := Sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
}
