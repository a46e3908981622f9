package consumer_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

const (
	grpStream     = "CDC_G"
	grpSource     = "g"
	grpPartitions = 8
	grpTakeover   = 2 * time.Second
)

// groupEnv is a server laid out as sluice run lays it out for source g,
// with read logins r1..r4, the events published by sluice's own
// in-process connection, and a record of what every member handled.
type groupEnv struct {
	t   testing.TB
	srv *natstest.Server
	js  jetstream.JetStream // sluice's events connection
	// connect opens a member's connection, closed with the test.
	connect func(login int) *nats.Conn

	// anyRepeat allows a message to be handled again right after itself
	// (an ack lost with a server), not only after a killed member.
	anyRepeat bool
	// slow, if set, makes the handling of one message take that long.
	slow func(seq uint64) time.Duration

	mu        sync.Mutex
	rnd       *rand.Rand
	published [grpPartitions][]uint64 // stream sequences, by partition
	handled   [grpPartitions][]handling
	owner     [grpPartitions]map[string]bool // OnOwn state
	owned     []ownEvent
}

type handling struct {
	member     string
	seq        uint64
	start, end time.Time
}

type ownEvent struct {
	member    string
	partition int
	owned     bool
	at        time.Time
}

func newGroupEnv(t testing.TB) *groupEnv {
	t.Helper()
	seed := logSeed(t)
	srv := natstest.NewWith(t, func(c *sink.ServerConfig) {
		c.Prefix, c.Source, c.Stream = "cdc", grpSource, grpStream
		for i := 1; i <= 4; i++ {
			c.Users = append(c.Users, sink.User{User: "r" + strconv.Itoa(i), Password: "pw" + strconv.Itoa(i), Permissions: sink.PermRead})
		}
	})
	nc, err := srv.Sink().Connect("sluice-events")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.EnsureStream(context.Background(), js, sink.StreamConfig{
		Name: grpStream, Prefix: "cdc", Source: grpSource, Partitions: grpPartitions, Replicas: 1, DuplicateWindow: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	e := &groupEnv{t: t, srv: srv, js: js, rnd: rand.New(rand.NewPCG(uint64(seed), 1))}
	e.connect = func(login int) *nats.Conn {
		t.Helper()
		nc, err := nats.Connect(srv.URL(), nats.UserInfo("r"+strconv.Itoa(login), "pw"+strconv.Itoa(login)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	for p := range e.owner {
		e.owner[p] = map[string]bool{}
	}
	return e
}

// publish stores one synthetic event on a random partition.
func (e *groupEnv) publish(ctx context.Context, n int) error {
	e.mu.Lock()
	p := e.rnd.IntN(grpPartitions)
	e.mu.Unlock()
	body, _ := json.Marshal(map[string]any{"op": "c", "key": map[string]int{"id": n}, "after": map[string]int{"id": n}})
	ack, err := e.js.Publish(ctx, fmt.Sprintf("cdc.%s.public.t.%d", grpSource, p), body)
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.published[p] = append(e.published[p], ack.Sequence)
	e.mu.Unlock()
	return nil
}

// publishing publishes until the returned stop is called, one event
// every 2ms; stop waits for the goroutine.
func (e *groupEnv) publishing() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; ctx.Err() == nil; n++ {
			if err := e.publish(ctx, n); err != nil && ctx.Err() == nil {
				e.t.Errorf("publish: %v", err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() { cancel(); <-done }
}

type member struct {
	name   string
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// start runs a member of group "workers" with read login i on a
// connection of its own.
func (e *groupEnv) start(name string, login int) *member {
	e.t.Helper()
	nc := e.connect(login)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{name: name, nc: nc, cancel: cancel, done: make(chan error, 1)}
	cfg := consumer.GroupConfig{
		Stream: grpStream, Prefix: "cdc", Source: grpSource, Partitions: grpPartitions,
		Group: "workers", Member: name, TakeoverAfter: grpTakeover,
		OnOwn: func(p int, owned bool) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.owner[p][name] = owned
			e.owned = append(e.owned, ownEvent{member: name, partition: p, owned: owned, at: time.Now()})
		},
	}
	// Each member's handler pauses a little at random, so that two
	// members handling one partition at once would overlap visibly.
	e.mu.Lock()
	pause := rand.New(rand.NewPCG(e.rnd.Uint64(), 2))
	e.mu.Unlock()
	var pmu sync.Mutex
	go func() {
		m.done <- consumer.RunGroup(ctx, js, cfg, func(ctx context.Context, p int, msg jetstream.Msg) error {
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			pmu.Lock()
			d := time.Duration(pause.IntN(1000)) * time.Microsecond
			pmu.Unlock()
			if e.slow != nil {
				d += e.slow(md.Sequence.Stream)
			}
			start := time.Now()
			time.Sleep(d)
			e.mu.Lock()
			e.handled[p] = append(e.handled[p], handling{member: name, seq: md.Sequence.Stream, start: start, end: time.Now()})
			e.mu.Unlock()
			return nil
		})
	}()
	e.t.Cleanup(func() {
		cancel()
		<-m.done
	})
	return m
}

// stop ends a member gracefully and checks RunGroup's result.
func (e *groupEnv) stop(m *member) {
	e.t.Helper()
	m.cancel()
	if err := <-m.done; err != nil {
		e.t.Errorf("member %s: RunGroup: %v", m.name, err)
	}
	m.done <- nil // for the cleanup
}

// owners counts the partitions each member owns now (OnOwn).
func (e *groupEnv) owners() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := map[string]int{}
	for p := range e.owner {
		for m, o := range e.owner[p] {
			if o {
				n[m]++
			}
		}
	}
	return n
}

// allHandled tells whether every published message was handled.
func (e *groupEnv) allHandled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	for p := range e.published {
		seen := map[uint64]bool{}
		for _, h := range e.handled[p] {
			seen[h.seq] = true
		}
		for _, s := range e.published[p] {
			if !seen[s] {
				return false
			}
		}
	}
	return true
}

// check asserts, per partition, that every published message was
// handled, in stream order, that no two members ever handled one
// partition at the same time, and that a message was handled twice only
// where redelivered may allow it: the message a killed member had in hand,
// once more by the member that took over.
func (e *groupEnv) check(killed string) {
	e.t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	for p := range e.published {
		hs := slices.Clone(e.handled[p])
		slices.SortFunc(hs, func(a, b handling) int { return a.start.Compare(b.start) })
		seen := map[uint64]bool{}
		for i, h := range hs {
			seen[h.seq] = true
			if i == 0 {
				continue
			}
			prev := hs[i-1]
			if h.start.Before(prev.end) && h.member != prev.member {
				e.t.Errorf("partition %d: %s handled %d from %s while %s handled %d until %s",
					p, h.member, h.seq, h.start.Format("15:04:05.000000"), prev.member, prev.seq, prev.end.Format("15:04:05.000000"))
			}
			switch {
			case h.seq > prev.seq:
			case h.seq == prev.seq && e.anyRepeat:
				e.t.Logf("partition %d: %d handled again by %s", p, h.seq, h.member)
			case h.seq == prev.seq && prev.member == killed && h.member != killed:
				e.t.Logf("partition %d: %d redelivered to %s after %s was killed", p, h.seq, h.member, killed)
			default:
				e.t.Errorf("partition %d: %s handled %d after %s handled %d", p, h.member, h.seq, prev.member, prev.seq)
			}
		}
		for _, s := range e.published[p] {
			if !seen[s] {
				e.t.Errorf("partition %d: message %d never handled", p, s)
			}
		}
		if len(e.published[p]) == 0 {
			e.t.Errorf("partition %d: no message published: the test proves nothing there", p)
		}
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three members over eight partitions handle every message once, each
// partition in stream order, never two at once, and share the partitions.
func TestGroupSharesPartitionsInOrder(t *testing.T) {
	e := newGroupEnv(t)
	ctx := context.Background()
	for n := range 200 {
		if err := e.publish(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	var ms []*member
	for i := 1; i <= 3; i++ {
		ms = append(ms, e.start("m"+strconv.Itoa(i), i))
	}
	stop := e.publishing()
	// ceil(8/3): nobody keeps more than its share, everyone has some.
	waitUntil(t, 30*time.Second, "every member owns a share", func() bool {
		o := e.owners()
		for _, m := range ms {
			if o[m.name] == 0 || o[m.name] > 3 {
				return false
			}
		}
		return true
	})
	stop()
	waitUntil(t, 30*time.Second, "every message handled", e.allHandled)
	t.Logf("owners at the end: %v", e.owners())
	for _, m := range ms {
		e.stop(m)
	}
	e.check("")
}

// A member killed without a goodbye loses its partitions within
// TakeoverAfter (plus a margin), and its successors continue from its
// last ack: nothing skipped, only the message it had in hand handled again.
func TestGroupTakeoverAfterKill(t *testing.T) {
	e := newGroupEnv(t)
	var ms []*member
	for i := 1; i <= 3; i++ {
		ms = append(ms, e.start("m"+strconv.Itoa(i), i))
	}
	stop := e.publishing()
	defer stop()
	waitUntil(t, 30*time.Second, "every member owns two partitions", func() bool {
		o := e.owners()
		return o["m1"] >= 2 && o["m2"] >= 2 && o["m3"] >= 2
	})
	victim := ms[0]
	var theirs []int
	e.mu.Lock()
	for p := range e.owner {
		if e.owner[p][victim.name] {
			theirs = append(theirs, p)
		}
	}
	e.mu.Unlock()
	// Abruptly: the connection first, so no unpin reaches the server.
	victim.nc.Close()
	killed := time.Now()
	victim.cancel()
	t.Logf("killed %s owning partitions %v", victim.name, theirs)

	// A partition is taken over when another member handles its message.
	takenAt := func(p int) time.Time {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, h := range e.handled[p] {
			if h.member != victim.name && h.start.After(killed) {
				return h.start
			}
		}
		return time.Time{}
	}
	waitUntil(t, 4*grpTakeover, "every partition of the killed member taken over", func() bool {
		for _, p := range theirs {
			if takenAt(p).IsZero() {
				return false
			}
		}
		return true
	})
	var worst time.Duration
	for _, p := range theirs {
		d := takenAt(p).Sub(killed)
		t.Logf("partition %d taken over after %s", p, d.Round(time.Millisecond))
		worst = max(worst, d)
	}
	if limit := grpTakeover + time.Second; worst > limit {
		t.Errorf("takeover took %s, more than TakeoverAfter %s plus a second", worst, grpTakeover)
	}
	stop()
	waitUntil(t, 30*time.Second, "every message handled", e.allHandled)
	if err := <-victim.done; err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		t.Errorf("killed member: RunGroup: %v, want nil or a closed connection", err)
	}
	victim.done <- nil
	for _, m := range ms[1:] {
		e.stop(m)
	}
	e.check(victim.name)
}

// A member joining a group of one ends up with about half the partitions.
func TestGroupJoinGetsFairShare(t *testing.T) {
	e := newGroupEnv(t)
	a := e.start("a", 1)
	stop := e.publishing()
	defer stop()
	waitUntil(t, 30*time.Second, "the only member owns every partition", func() bool { return e.owners()["a"] == grpPartitions })
	joined := time.Now()
	b := e.start("b", 2)
	waitUntil(t, 30*time.Second, "the joining member owns half", func() bool {
		o := e.owners()
		return o["a"] == grpPartitions/2 && o["b"] == grpPartitions/2
	})
	t.Logf("fair share after %s", time.Since(joined).Round(time.Millisecond))
	// The rule rests on num_waiting counting the members: each keeps one
	// pull open per partition (but while handling one of its messages).
	nc, err := nats.Connect(e.srv.URL(), nats.UserInfo("r3", "pw3"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rjs, _ := jetstream.New(nc)
	waitUntil(t, 10*time.Second, "num_waiting 2 on some partition's consumer", func() bool {
		most := 0
		for p := range grpPartitions {
			c, err := rjs.Consumer(context.Background(), grpStream, consumer.GroupConsumerName("workers", p))
			if err != nil {
				t.Fatal(err)
			}
			most = max(most, c.CachedInfo().NumWaiting)
			if n := c.CachedInfo().NumWaiting; n > 2 {
				t.Fatalf("partition %d: num_waiting %d with two members", p, n)
			}
		}
		return most == 2
	})
	// And it stays so: nobody releases below the share.
	time.Sleep(3 * grpTakeover)
	if o := e.owners(); o["a"] != grpPartitions/2 || o["b"] != grpPartitions/2 {
		t.Errorf("owners %v after %s, want %d each", o, 3*grpTakeover, grpPartitions/2)
	}
	stop()
	waitUntil(t, 30*time.Second, "every message handled", e.allHandled)
	e.stop(a)
	e.stop(b)
	e.check("")
}

func logSeed(t testing.TB) int64 {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	return seed
}

// On a 3-node cluster with replicas 3, losing the stream's leader while
// two members consume (one connected there) loses nothing and keeps each
// partition's order; an ack lost with the node may repeat a message once.
func TestGroupSurvivesNodeLoss(t *testing.T) {
	plan := natstest.NewCluster(t, 3)
	seed := logSeed(t)
	e := &groupEnv{t: t, anyRepeat: true, rnd: rand.New(rand.NewPCG(uint64(seed), 1))}
	for p := range e.owner {
		e.owner[p] = map[string]bool{}
	}
	// Admin logins see the streams of their own account with the plain API.
	e.connect = func(int) *nats.Conn { return plan.Connect() }
	js, err := jetstream.New(plan.Connect())
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	ctx := context.Background()
	waitUntil(t, time.Minute, "the stream is created", func() bool {
		_, err := sink.EnsureStream(ctx, js, sink.StreamConfig{
			Name: grpStream, Prefix: "cdc", Source: grpSource, Partitions: grpPartitions, Replicas: 3, DuplicateWindow: time.Minute,
		})
		return err == nil
	})
	for n := range 100 {
		if err := e.publish(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	a, b := e.start("a", 1), e.start("b", 2)
	// Publishing goes on from here, through the loss. It starts before the
	// wait for both members to own partitions: a partition gets an owner
	// only when a message of it is delivered, so without new events the
	// member that drained the backlog alone would keep every pin. A publish
	// that fails is sent again with its message id, so the stream stores
	// it once.
	pctx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for n := 100; pctx.Err() == nil; n++ {
			for pctx.Err() == nil {
				e.mu.Lock()
				p := e.rnd.IntN(grpPartitions)
				e.mu.Unlock()
				body, _ := json.Marshal(map[string]any{"op": "c", "key": map[string]int{"id": n}})
				actx, cancel := context.WithTimeout(pctx, 2*time.Second)
				ack, err := js.Publish(actx, fmt.Sprintf("cdc.%s.public.t.%d", grpSource, p), body, jetstream.WithMsgID("m"+strconv.Itoa(n)))
				cancel()
				if err == nil {
					e.mu.Lock()
					if !ack.Duplicate {
						e.published[p] = append(e.published[p], ack.Sequence)
					}
					e.mu.Unlock()
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	waitUntil(t, 30*time.Second, "both members own partitions", func() bool {
		o := e.owners()
		return o["a"] > 0 && o["b"] > 0
	})
	leader := natstest.StreamLeader(t, js, grpStream)
	plan.ServerNamed(leader).Stop()
	t.Logf("stopped %s, the stream's leader", leader)
	handledNow := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		n := 0
		for p := range e.handled {
			n += len(e.handled[p])
		}
		return n
	}
	before := handledNow()
	waitUntil(t, time.Minute, "members handle events after the loss", func() bool { return handledNow() > before+200 })
	stopPub()
	<-pubDone
	waitUntil(t, time.Minute, "every message handled", e.allHandled)
	e.stop(a)
	e.stop(b)
	e.check("")
}

// A handler that takes longer than TakeoverAfter keeps its message (in
// progress) and its partition's order: another member may get the
// partition, but only after the slow message is acked.
func TestGroupSlowHandler(t *testing.T) {
	e := newGroupEnv(t)
	ctx := context.Background()
	for n := range 100 {
		if err := e.publish(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	e.mu.Lock()
	slowSeq := e.published[0][len(e.published[0])/2]
	e.mu.Unlock()
	e.slow = func(seq uint64) time.Duration {
		if seq == slowSeq {
			return 2*grpTakeover + grpTakeover/2
		}
		return 0
	}
	a, b := e.start("a", 1), e.start("b", 2)
	waitUntil(t, time.Minute, "every message handled", e.allHandled)
	e.stop(a)
	e.stop(b)
	e.mu.Lock()
	var times int
	for _, h := range e.handled[0] {
		if h.seq == slowSeq {
			times++
			t.Logf("slow message %d handled by %s in %s", h.seq, h.member, h.end.Sub(h.start).Round(time.Millisecond))
		}
	}
	e.mu.Unlock()
	if times != 1 {
		t.Errorf("the slow message was handled %d times, want once (in-progress acks keep it)", times)
	}
	e.check("")
}

// Group and source names become consumer names and filter subjects: a
// name that is not one token ("a.>", "*", whitespace) is refused before
// anything reaches the server, naming the setting.
func TestGroupRefusesUnfitNames(t *testing.T) {
	for _, c := range []struct{ group, source, want string }{
		{"a.>", "g", `Group "a.>": use letters, digits, - and _ only`},
		{"*", "g", `Group "*"`},
		{"bill ing", "g", `Group "bill ing"`},
		{"billing", "g.>", `Source "g.>"`},
		{"", "g", "Group is empty"},
	} {
		err := consumer.RunGroup(context.Background(), nil, consumer.GroupConfig{
			Stream: grpStream, Prefix: "cdc", Source: c.source, Partitions: grpPartitions, Group: c.group,
		}, func(context.Context, int, jetstream.Msg) error { return nil })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("group %q, source %q: %v, want %q", c.group, c.source, err, c.want)
		}
	}
}
