package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Consumer groups share a source's partitions between worker processes
// using JetStream's own mechanisms only; there is no lease protocol of
// sluice's. See README "Consumer groups" for the model.
//
//   - One durable pull consumer per partition, <group>-<p>, filtered on
//     <prefix>.<source>.*.*.<p>, with the pinned-client priority policy:
//     the server delivers a partition's messages to one member (the pinned
//     one) at a time, and unpins it when it stops pulling for PinnedTTL.
//   - MaxAckPending is 1. JetStream does not move a dead member's unacked
//     messages ahead of new ones: it redelivers them only when their
//     AckWait runs out, and meanwhile hands the new owner whatever else it
//     may. With one message outstanding, the new owner gets nothing until
//     that one is acked or redelivered, so per-key order survives any
//     failover. The price is one message per acknowledgement round trip per
//     partition.
//   - Every member keeps a pull open on every partition's consumer, so the
//     server's count of waiting pulls (num_waiting) tells how many members
//     are alive; a member that holds more than its share unpins the extra
//     partitions itself and stays off them for a while.

// GroupPriority is the priority group every member pulls with.
const GroupPriority = "sluice"

// DefaultTakeoverAfter is GroupConfig.TakeoverAfter when it is zero.
const DefaultTakeoverAfter = 5 * time.Second

// MinTakeoverAfter is the smallest TakeoverAfter: a member pulls every
// TakeoverAfter/2 to keep its pins, and shorter pulls than a second would
// mostly be request overhead.
const MinTakeoverAfter = 2 * time.Second

// GroupConfig configures one member of a consumer group.
type GroupConfig struct {
	Stream     string // the source's event stream
	Prefix     string // subject prefix, e.g. "cdc"
	Source     string // source name
	Partitions int    // the stream's partition count (stream.partitions)
	Group      string // group name: every member of a group uses the same
	Member     string // this member's name, for logs only
	// TakeoverAfter is how long a dead member keeps its partitions: the
	// consumers' PinnedTTL and AckWait. A handler that runs longer keeps
	// its message with in-progress acks. Default DefaultTakeoverAfter,
	// at least MinTakeoverAfter.
	TakeoverAfter time.Duration
	Log           *slog.Logger
	// OnOwn, if set, is called when this member starts (owned true) or
	// stops (false) owning a partition, from that partition's goroutine.
	OnOwn func(partition int, owned bool)
	// Batch is how many messages of a partition a member may hold
	// unacknowledged (the consumers' MaxAckPending), and the most
	// RunGroupBatches hands over at once. Default 1. Above 1, a new owner
	// may get a partition's later messages before a dead owner's
	// unacknowledged ones come back (see the package comment), so the
	// handler must order them itself: sluice apply does, by the stream
	// sequence it stores with the rows.
	Batch int
}

func (c *GroupConfig) check() error {
	for _, v := range []struct{ setting, value string }{
		{"Stream", c.Stream}, {"Prefix", c.Prefix}, {"Source", c.Source}, {"Group", c.Group},
	} {
		if v.value == "" {
			return fmt.Errorf("consumer group: %s is empty: set it", v.setting)
		}
	}
	if err := natsToken("Group", c.Group); err != nil {
		return err
	}
	if err := natsToken("Source", c.Source); err != nil {
		return err
	}
	if c.Partitions < 1 {
		return fmt.Errorf("consumer group: Partitions %d: set the stream's partition count", c.Partitions)
	}
	if c.TakeoverAfter == 0 {
		c.TakeoverAfter = DefaultTakeoverAfter
	}
	if c.TakeoverAfter < MinTakeoverAfter {
		return fmt.Errorf("consumer group: TakeoverAfter %s is below the minimum %s", c.TakeoverAfter, MinTakeoverAfter)
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Batch == 0 {
		c.Batch = 1
	}
	if c.Batch < 1 {
		return fmt.Errorf("consumer group: Batch %d: use 1 or more", c.Batch)
	}
	return nil
}

// natsToken refuses a name that cannot be one subject token and part of a
// consumer name.
func natsToken(setting, v string) error {
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("consumer group: %s %q: use letters, digits, - and _ only", setting, v)
		}
	}
	return nil
}

// GroupConsumerName is the durable consumer of one partition of a group.
func GroupConsumerName(group string, partition int) string {
	return group + "-" + strconv.Itoa(partition)
}

// groupConsumerConfig is the configuration every member creates; members
// must agree on it, so it depends on the GroupConfig only.
func groupConsumerConfig(cfg GroupConfig, p int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        GroupConsumerName(cfg.Group, p),
		Description:    "sluice consumer group " + cfg.Group + ", partition " + strconv.Itoa(p),
		FilterSubject:  fmt.Sprintf("%s.%s.*.*.%d", cfg.Prefix, cfg.Source, p),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.TakeoverAfter,
		MaxAckPending:  cfg.Batch,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{GroupPriority},
		PinnedTTL:      cfg.TakeoverAfter,
	}
}

// RunGroup runs one member of a consumer group until ctx ends (it then
// returns nil) or handle fails (it returns that error). handle gets one
// partition's messages one at a time, in stream order; partitions run
// concurrently. A nil return acknowledges the message (synchronously,
// before the partition's next message); an error leaves it for the next
// owner. On return, the member hands its partitions over at once (when its
// connection still works) rather than after TakeoverAfter.
func RunGroup(ctx context.Context, js jetstream.JetStream, cfg GroupConfig,
	handle func(ctx context.Context, partition int, msg jetstream.Msg) error) error {
	return RunGroupBatches(ctx, js, cfg, func(ctx context.Context, p int, msgs []jetstream.Msg) error {
		for _, m := range msgs {
			if err := handle(ctx, p, m); err != nil {
				return err
			}
		}
		return nil
	})
}

// BatchWait is how long RunGroupBatches waits for more messages of a
// partition before it hands over a batch smaller than GroupConfig.Batch.
const BatchWait = 20 * time.Millisecond

// RunGroupBatches is RunGroup handing over up to GroupConfig.Batch
// messages of a partition at once, in delivery order: whatever arrived
// until the batch is full or no message came for BatchWait. A nil return
// acknowledges them all.
func RunGroupBatches(ctx context.Context, js jetstream.JetStream, cfg GroupConfig,
	handle func(ctx context.Context, partition int, msgs []jetstream.Msg) error) error {
	if err := cfg.check(); err != nil {
		return err
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if err != nil {
		return fmt.Errorf("consumer group %s: stream %s: %w (is sluice running, and does the login read this source?)", cfg.Group, cfg.Stream, err)
	}
	parts := make([]*groupPartition, cfg.Partitions)
	for p := range parts {
		c, err := stream.CreateOrUpdateConsumer(ctx, groupConsumerConfig(cfg, p))
		if err != nil {
			return fmt.Errorf("consumer group %s: create consumer %s: %w (every member must use the same Partitions and TakeoverAfter)",
				cfg.Group, GroupConsumerName(cfg.Group, p), err)
		}
		parts[p] = &groupPartition{cfg: &cfg, p: p, stream: stream, cons: c, release: make(chan struct{}, 1)}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, gp := range parts {
		g.Go(func() error { return gp.run(gctx, handle) })
	}
	g.Go(func() error { return rebalance(gctx, &cfg, stream, parts) })
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return err
}

// groupPartition is one partition's puller. Only its own goroutine (run)
// touches its fields, except pin (read by rebalance) and release.
type groupPartition struct {
	cfg    *GroupConfig
	p      int
	stream jetstream.Stream
	cons   jetstream.Consumer
	// release asks run to give the partition up for a while.
	release chan struct{}
	pin     atomicString
}

// atomicString is the pin id this member holds on the partition, "" when
// none.
type atomicString struct{ p atomic.Pointer[string] }

func (a *atomicString) Load() string {
	if s := a.p.Load(); s != nil {
		return *s
	}
	return ""
}

func (a *atomicString) Store(s string) { a.p.Store(&s) }

func (gp *groupPartition) run(ctx context.Context, handle func(context.Context, int, []jetstream.Msg) error) error {
	cfg := gp.cfg
	owned := false
	setOwned := func(o bool) {
		if o != owned {
			owned = o
			if !o {
				gp.pin.Store("")
			}
			cfg.Log.Debug("consumer group: ownership", "group", cfg.Group, "member", cfg.Member, "partition", gp.p, "owned", o)
			if cfg.OnOwn != nil {
				cfg.OnOwn(gp.p, o)
			}
		}
	}
	defer func() {
		if owned {
			gp.unpin(ctx)
		}
		setOwned(false)
	}()
	pull := cfg.TakeoverAfter / 2
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		select {
		case <-gp.release:
			if !owned {
				continue // it moved already
			}
			gp.unpin(ctx)
			setOwned(false)
			// Off the partition for two TakeoverAfters, so that another
			// member's pull, not ours, gets the new pin.
			if !sleep(ctx, 2*cfg.TakeoverAfter) {
				return nil
			}
			continue
		default:
		}
		fctx, cancel := context.WithTimeout(ctx, pull)
		batch, err := gp.cons.Fetch(cfg.Batch, jetstream.FetchContext(fctx), jetstream.FetchPriorityGroup(GroupPriority))
		if err != nil {
			cancel()
			if errors.Is(err, nats.ErrConnectionClosed) {
				return fmt.Errorf("consumer group %s: partition %d: %w", cfg.Group, gp.p, err)
			}
			cfg.Log.Debug("consumer group: pull failed, retrying", "partition", gp.p, "error", err)
			if !sleep(ctx, backoff) {
				return nil
			}
			continue
		}
		var held []jetstream.Msg
		flush := func() error {
			if len(held) == 0 {
				return nil
			}
			err := gp.handleBatch(ctx, held, handle)
			if err != nil {
				// Redelivered at once, to the next owner (we unpin on return).
				for _, m := range held {
					_ = m.Nak()
				}
			}
			held = held[:0]
			return err
		}
		// drain hands over the pull's messages in batches as they come.
		drain := func() error {
			wait := time.NewTimer(BatchWait)
			defer wait.Stop()
			msgs := batch.Messages()
			for {
				var idle <-chan time.Time
				if len(held) > 0 {
					idle = wait.C
				}
				select {
				case msg, ok := <-msgs:
					if !ok {
						return flush()
					}
					if pin := msg.Headers().Get("Nats-Pin-Id"); pin != "" {
						if owned && pin != gp.pin.Load() {
							// Our pin lapsed and we got it back under a new id: a
							// different ownership, even if the same member.
							if err := flush(); err != nil {
								return err
							}
							setOwned(false)
						}
						gp.pin.Store(pin)
					}
					setOwned(true)
					held = append(held, msg)
					if len(held) >= cfg.Batch {
						if err := flush(); err != nil {
							return err
						}
					}
					wait.Reset(BatchWait)
				case <-idle:
					if err := flush(); err != nil {
						return err
					}
				}
			}
		}
		if err := drain(); err != nil {
			cancel()
			return err
		}
		berr := batch.Error()
		cancel()
		switch {
		case berr == nil, errors.Is(berr, nats.ErrTimeout), errors.Is(berr, context.DeadlineExceeded):
			backoff = 100 * time.Millisecond
		case errors.Is(berr, jetstream.ErrPinIDMismatch):
			// Another member holds the pin now; nats.go forgot ours.
			setOwned(false)
		case errors.Is(berr, nats.ErrConnectionClosed):
			return fmt.Errorf("consumer group %s: partition %d: %w", cfg.Group, gp.p, berr)
		case errors.Is(berr, jetstream.ErrConsumerDeleted), errors.Is(berr, jetstream.ErrConsumerNotFound):
			return fmt.Errorf("consumer group %s: partition %d: consumer %s: %w (restart the members to create it again; it starts from the stream's first event)",
				cfg.Group, gp.p, GroupConsumerName(cfg.Group, gp.p), berr)
		case ctx.Err() != nil:
		default:
			cfg.Log.Debug("consumer group: pull ended with an error, retrying", "partition", gp.p, "error", berr)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, pull)
		}
	}
	return nil
}

// handleBatch hands messages to handle and acks them. While handle runs, a
// goroutine (waited for before returning) marks them in progress, so a
// slow handler keeps them instead of their redelivery to another member.
func (gp *groupPartition) handleBatch(ctx context.Context, msgs []jetstream.Msg, handle func(context.Context, int, []jetstream.Msg) error) error {
	hctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(gp.cfg.TakeoverAfter / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	err := handle(hctx, gp.p, msgs)
	stop()
	<-done
	if err != nil {
		return fmt.Errorf("consumer group %s: partition %d: %w", gp.cfg.Group, gp.p, err)
	}
	// Every ack but the last goes out unconfirmed; the last is confirmed,
	// and one connection keeps the order, so the server has them all
	// then. The next messages are handed only once that ack is confirmed,
	// or given up on: with MaxAckPending 1 the server delivers nothing
	// else of the partition until it has the ack or AckWait ran out, so
	// an ack that did not land (a cluster node lost meanwhile) only means
	// this message is handled once more, in its place. That is no reason
	// to stop the member; a closed connection is.
	for _, m := range msgs[:len(msgs)-1] {
		if err := m.Ack(); errors.Is(err, nats.ErrConnectionClosed) {
			return fmt.Errorf("consumer group %s: partition %d: ack: %w", gp.cfg.Group, gp.p, err)
		}
	}
	last := msgs[len(msgs)-1]
	for range 2 {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gp.cfg.TakeoverAfter/2)
		err = last.DoubleAck(actx)
		cancel()
		if err == nil || errors.Is(err, nats.ErrConnectionClosed) {
			break
		}
	}
	switch {
	case err == nil:
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("consumer group %s: partition %d: ack: %w", gp.cfg.Group, gp.p, err)
	default:
		gp.cfg.Log.Warn("consumer group: ack not confirmed; the messages may be handled again",
			"group", gp.cfg.Group, "partition", gp.p, "error", err)
	}
	return nil
}

// unpin hands the partition over now rather than after TakeoverAfter. It
// works after ctx ended, as long as the connection does.
func (gp *groupPartition) unpin(ctx context.Context) {
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := gp.stream.UnpinConsumer(uctx, GroupConsumerName(gp.cfg.Group, gp.p), GroupPriority); err != nil {
		gp.cfg.Log.Debug("consumer group: unpin failed; the partition moves after TakeoverAfter", "partition", gp.p, "error", err)
	}
}

// rebalance gives away partitions beyond this member's fair share. The
// rule: with M members alive (the largest num_waiting over the group's
// consumers, since every member keeps one pull open on each partition it
// is not handling a message of), a member owning more than ceil(P/M)
// partitions releases the extra ones, highest partition first, and stays
// off each for 2×TakeoverAfter, so that a member with fewer gets pinned.
func rebalance(ctx context.Context, cfg *GroupConfig, stream jetstream.Stream, parts []*groupPartition) error {
	t := time.NewTicker(cfg.TakeoverAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		members := 0
		var mine []int
		for _, gp := range parts {
			info, err := gp.cons.Info(ctx)
			if err != nil {
				if ctx.Err() == nil {
					cfg.Log.Debug("consumer group: consumer info", "partition", gp.p, "error", err)
				}
				members = 0 // an incomplete view decides nothing
				break
			}
			members = max(members, info.NumWaiting)
			pin := gp.pin.Load()
			if pin != "" && len(info.PriorityGroups) > 0 && info.PriorityGroups[0].PinnedClientID == pin {
				mine = append(mine, gp.p)
			}
		}
		if members < 2 {
			continue
		}
		share := (len(parts) + members - 1) / members
		for i := len(mine) - 1; i >= share; i-- {
			cfg.Log.Info("consumer group: releasing a partition to share them", "group", cfg.Group, "member", cfg.Member,
				"partition", mine[i], "owned", len(mine), "members", members, "share", share)
			select {
			case parts[mine[i]].release <- struct{}{}:
			default:
			}
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
