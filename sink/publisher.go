package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
type Publisher struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	window  int
	in      chan *entry
	onAcked func(Acked)
	log     *slog.Logger
	// Owned by Run once it starts.
	storedSeq uint64 // last sequence the stream is known to hold
	nextSeq   uint64 // sequence the next published message must get
	failures  int    // consecutive failed publishes
}

// entry is a message to publish, or a marker that resolves once every
// message queued before it is stored.
type entry struct {
	msg   *nats.Msg
	id    string
	seq   uint64 // stream sequence the message must get
	fut   jetstream.PubAckFuture
	acked *Acked        // commit marker
	done  chan struct{} // flush marker
}

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Window is the most messages in flight (published, not yet acked).
	Window int
	// OnAcked is called, in order and from Run's goroutine, for every
	// transaction boundary once everything before it is stored.
	OnAcked func(Acked)
	Log     *slog.Logger
}

// NewPublisher prepares publishing to stream, starting after its current
// last sequence.
func NewPublisher(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, cfg PublisherConfig) (*Publisher, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream state: %w", err)
	}
	if cfg.Window <= 0 {
		cfg.Window = 4096
	}
	return &Publisher{
		js:        js,
		stream:    stream,
		window:    cfg.Window,
		in:        make(chan *entry, 1024),
		onAcked:   cfg.OnAcked,
		log:       cfg.Log,
		storedSeq: info.State.LastSeq,
		nextSeq:   info.State.LastSeq + 1,
	}, nil
}

// Publish queues one message. It blocks while the in-flight window is full.
func (p *Publisher) Publish(ctx context.Context, subject, id string, data []byte) error {
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	return p.enqueue(ctx, &entry{msg: m, id: id})
}

// Commit queues a transaction boundary; OnAcked reports it once stored.
func (p *Publisher) Commit(ctx context.Context, a Acked) error {
	return p.enqueue(ctx, &entry{acked: &a})
}

// Flush waits until every message queued so far is stored.
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
		for len(q) > 0 && q[0].msg == nil {
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
		if len(q) > 0 {
			okc, errc = q[0].fut.Ok(), q[0].fut.Err()
		}
		var err error
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-in:
			if e.msg != nil {
				p.publish(e)
				inflight++
			}
			q = append(q, e)
			continue
		case ack := <-okc:
			q[0].fut = nil
			if !ack.Duplicate && ack.Sequence == q[0].seq {
				p.storedSeq = ack.Sequence
				p.failures = 0
				q[0] = nil
				q = q[1:]
				inflight--
				continue
			}
			if ack.Duplicate {
				// Stored long ago under this id (a replay that no checkpoint
				// covered): it is in the stream, so it counts as delivered,
				// but the messages behind it were sent expecting its sequence.
				p.log.Warn("message already in the stream; dropped as duplicate",
					"msg_id", q[0].id, "seq", ack.Sequence)
				q[0] = nil
				q = q[1:]
			} else {
				p.log.Warn("stream sequence differs from prediction; resynchronising",
					"msg_id", q[0].id, "want_seq", q[0].seq, "got_seq", ack.Sequence)
			}
			q, err = p.repair(ctx, q)
		case perr := <-errc:
			q[0].fut = nil
			p.failures++
			p.log.Warn("publish failed; republishing from the stream's last stored message",
				"msg_id", q[0].id, "subject", q[0].msg.Subject, "attempt", p.failures, "error", perr)
			if err = sleep(ctx, backoff(p.failures)); err == nil {
				q, err = p.repair(ctx, q)
			}
		}
		if err != nil {
			return err
		}
		inflight = countMessages(q)
	}
}

// repair brings the queue in line with what the stream holds after a failed
// or surprising publish: it lets every publish in flight settle, reads the
// stream's last sequence, drops the queued messages the stream already has
// (a prefix, thanks to the sequence guard) and republishes the rest in order.
func (p *Publisher) repair(ctx context.Context, q []*entry) ([]*entry, error) {
	for _, e := range q {
		if e.fut == nil {
			continue
		}
		// Each future settles within the async-publish ack timeout.
		select {
		case <-e.fut.Ok():
		case <-e.fut.Err():
		case <-ctx.Done():
			return q, ctx.Err()
		}
		e.fut = nil
	}
	var last uint64
	for attempt := 1; ; attempt++ {
		info, err := p.stream.Info(ctx)
		if err == nil {
			last = info.State.LastSeq
			break
		}
		p.log.Warn("cannot read stream state; retrying", "attempt", attempt, "error", err)
		if err := sleep(ctx, backoff(attempt)); err != nil {
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
			if e.msg != nil && e.seq == last {
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
			if err := sleep(ctx, backoff(attempt)); err != nil {
				return q, err
			}
		}
		if got := raw.Header.Get(jetstream.MsgIDHeader); want == "" || got != want {
			return q, fmt.Errorf("%w: sequence %d holds message id %q, expected %q; run one sluice per source and stream",
				ErrForeignWriter, last, got, want)
		}
	}
	// Resolve what is stored, in order, then republish the rest.
	for len(q) > 0 && (q[0].msg == nil || q[0].seq <= last) {
		if q[0].msg == nil {
			p.resolveMarker(q[0])
		} else {
			p.storedSeq = q[0].seq
		}
		q[0] = nil
		q = q[1:]
	}
	p.storedSeq = last
	p.nextSeq = last + 1
	for _, e := range q {
		if e.msg != nil {
			p.publish(e)
		}
	}
	return q, nil
}

// publish sends e with the stream sequence it must land on, so JetStream
// refuses it unless every earlier message is stored.
func (p *Publisher) publish(e *entry) {
	e.seq = p.nextSeq
	p.nextSeq++
	fut, err := p.js.PublishMsgAsync(e.msg, jetstream.WithExpectLastSequence(e.seq-1))
	if err != nil {
		// Not even sent (connection closed, too many pending): a future that
		// fails at once sends it through repair like any other failure.
		fut = newFailedFuture(e.msg, err)
	}
	e.fut = fut
}

func (p *Publisher) resolveMarker(e *entry) {
	switch {
	case e.acked != nil:
		e.acked.Seq = p.storedSeq
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
		if e.msg != nil {
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

// backoff is the capped exponential wait before retry attempt n (from 1).
func backoff(n int) time.Duration {
	d := 50 * time.Millisecond
	for i := 1; i < n && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// maxReplayIDs bounds how many stored ids a restart reads back. Past it the
// stream's duplicate window is the only guard, which is said in the log.
const maxReplayIDs = 2_000_000

// IDsAfter returns the message ids the stream holds after sequence seq: the
// messages stored after the last checkpoint, which a replay must not repeat.
// Reading them back makes exactly-once independent of the duplicate window.
func (p *Publisher) IDsAfter(ctx context.Context, seq uint64) (map[string]struct{}, error) {
	info, err := p.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read stream state: %w", err)
	}
	last := info.State.LastSeq
	ids := make(map[string]struct{})
	if last <= seq || info.State.Msgs == 0 {
		return ids, nil
	}
	if last-seq > maxReplayIDs {
		p.log.Warn("the stream holds many messages after the checkpoint; only the newest are checked for replays, older ones rely on the duplicate window",
			"after_seq", seq, "last_seq", last, "checked", maxReplayIDs)
		seq = last - maxReplayIDs
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
				ids[id] = struct{}{}
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
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return nil, err
		}
	}
}
