package sink_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
)

type ackLog struct {
	mu    sync.Mutex
	acked []sink.Acked
}

func (a *ackLog) add(x sink.Acked) { a.mu.Lock(); a.acked = append(a.acked, x); a.mu.Unlock() }
func (a *ackLog) all() []sink.Acked {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]sink.Acked(nil), a.acked...)
}

// A NATS server restart in the middle of publishing fails in-flight
// publishes; the publisher must repair so the stream ends up with every
// message exactly once, in publish order.
func TestPublisherSurvivesServerRestart(t *testing.T) {
	srv := natstest.New(t)
	nc := srv.Connect()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream := natstest.Stream(t, js)
	var acks ackLog
	var logs strings.Builder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Window: 256, OnAcked: acks.add, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- pub.Run(ctx) }()

	const n = 20000
	var want []string
	for i := range n {
		id := "t:" + strconv.Itoa(i/10) + ":" + strconv.Itoa(i%10)
		want = append(want, id)
		if err := pub.Publish(ctx, fmt.Sprintf("cdc.t.s.tbl.%d", i%4), id, []byte(`{"i":`+strconv.Itoa(i)+`}`)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := pub.Commit(ctx, sink.Acked{Pos: sources.Position(strconv.Itoa(i / 10))}); err != nil {
				t.Fatal(err)
			}
		}
		if i == n/2 {
			srv.Stop()
			// The fault, not a wait: the server stays down for 300ms while
			// publishing goes on.
			go func() { time.Sleep(300 * time.Millisecond); srv.Start() }()
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 60*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got := natstest.MsgIDs(t, stream)
	if len(got) != len(want) {
		t.Fatalf("stream holds %d messages, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("stream message %d is %s, want %s: order broken", i+1, got[i], want[i])
		}
	}
	acked := acks.all()
	if len(acked) != n/10 {
		t.Fatalf("%d commits acked, want %d", len(acked), n/10)
	}
	for i, a := range acked {
		if a.Pos != sources.Position(strconv.Itoa(i)) || a.Seq != uint64(i+1)*10 {
			t.Fatalf("ack %d = %+v, want pos %d at seq %d", i, a, i, (i+1)*10)
		}
	}
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(logs.String(), "publish failed; republishing") {
		t.Fatalf("the restart caused no repair, so the test proved nothing; log:\n%s", logs.String())
	}
}

// With batched acks, a message refused without an ack (here a duplicate
// of one an earlier run stored) breaks the sequence chain silently; the next
// ack must report it, and the repair must leave every id in the stream
// exactly once, in order.
func TestPublisherBatchedAckChainBreak(t *testing.T) {
	srv := natstest.New(t)
	nc := srv.Connect()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	stream := natstest.Stream(t, js)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Stored by an earlier run after its last checkpoint.
	if _, err := js.Publish(ctx, "cdc.t.s.tbl.0", []byte(`{}`), jetstream.WithMsgID("t:1:5")); err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var acks ackLog
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Window: 256, OnAcked: acks.add, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	// Queued before Run starts, so they go out as one burst: only the last
	// asks for an ack.
	want := []string{"t:1:5"}
	for i := range 10 {
		id := "t:1:" + strconv.Itoa(i)
		if i != 5 {
			want = append(want, id)
		}
		if err := pub.Publish(ctx, "cdc.t.s.tbl.0", id, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Commit(ctx, sink.Acked{Pos: "1"}); err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- pub.Run(ctx) }()
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	if err := pub.Flush(fctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if got := natstest.MsgIDs(t, stream); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("stream holds %v, want %v", got, want)
	}
	if a := acks.all(); len(a) != 1 || a[0].Seq != 10 {
		t.Fatalf("commit acks = %+v, want one at seq 10", a)
	}
	for _, line := range []string{"publish failed; republishing", "dropped as duplicate"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("log lacks %q: the chain break was not detected as such; log:\n%s", line, logs.String())
		}
	}
	cancel()
	<-runErr
}

// BenchmarkPublisher is the publisher alone against an embedded JetStream:
// ~300-byte messages on 8 subjects, a commit marker every 100, the
// default window.
func BenchmarkPublisher(b *testing.B) {
	srv := natstest.New(b)
	nc := srv.Connect()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192))
	if err != nil {
		b.Fatal(err)
	}
	stream := natstest.Stream(b, js)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Window: 4096, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	go pub.Run(ctx)
	data := []byte(strings.Repeat("x", 300))
	subjects := make([]string, 8)
	for i := range subjects {
		subjects[i] = "cdc.t.s.tbl." + strconv.Itoa(i)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := range b.N {
		if err := pub.Publish(ctx, subjects[i%8], "t:0/"+strconv.Itoa(i/100)+":"+strconv.Itoa(i%100), data); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			if err := pub.Commit(ctx, sink.Acked{Pos: sources.Position(strconv.Itoa(i / 100))}); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := pub.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// A second writer on the stream breaks the order guarantee: the publisher
// must stop with ErrForeignWriter rather than interleave.
func TestPublisherDetectsForeignWriter(t *testing.T) {
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	stream := natstest.Stream(t, js)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- pub.Run(ctx) }()
	if err := pub.Publish(ctx, "cdc.t.s.tbl.0", "t:1:0", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "cdc.t.s.tbl.1", []byte("intruder")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, "cdc.t.s.tbl.0", "t:2:0", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; !errors.Is(err, sink.ErrForeignWriter) {
		t.Fatalf("Run = %v, want ErrForeignWriter", err)
	}
}

// IDsAfter lists what a replay must skip.
// fiveMessages is a test stream holding messages t:0:0 .. t:4:0 at
// sequences 1 to 5.
func fiveMessages(t *testing.T) (jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	stream := natstest.Stream(t, js)
	for i := range 5 {
		if _, err := js.Publish(context.Background(), "cdc.t.s.tbl.0", []byte("{}"), jetstream.WithMsgID("t:"+strconv.Itoa(i)+":0")); err != nil {
			t.Fatal(err)
		}
	}
	return js, stream
}

func TestIDsAfter(t *testing.T) {
	js, stream := fiveMessages(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pub.IDsAfter(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if ids.Len() != 2 {
		t.Fatalf("IDsAfter(3) holds %d ids, want the 2 at sequences 4 and 5", ids.Len())
	}
	for _, id := range []string{"t:3:0", "t:4:0"} {
		if !ids.Has(id) {
			t.Errorf("IDsAfter(3) lacks %s", id)
		}
	}
	if ids.Has("t:2:0") {
		t.Errorf("IDsAfter(3) holds t:2:0, stored at sequence 3")
	}
	if ids, _ := pub.IDsAfter(ctx, 5); ids.Len() != 0 {
		t.Errorf("IDsAfter(last) holds %d ids, want none", ids.Len())
	}
}

func TestEnsureStreamRefusesPartitionChange(t *testing.T) {
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	natstest.Stream(t, js)
	_, err = sink.EnsureStream(context.Background(), js, sink.StreamConfig{
		Name: "T", Prefix: "cdc", Source: "t", Partitions: 8, Replicas: 1, DuplicateWindow: time.Minute,
	})
	if !errors.Is(err, sink.ErrStreamMismatch) {
		t.Fatalf("EnsureStream with 8 partitions over a 4-partition stream = %v, want ErrStreamMismatch", err)
	}
	_, err = sink.EnsureStream(context.Background(), js, sink.StreamConfig{
		Name: "T", Prefix: "events", Source: "t", Partitions: 4, Replicas: 1, DuplicateWindow: time.Minute,
	})
	if !errors.Is(err, sink.ErrStreamMismatch) {
		t.Fatalf("EnsureStream with another prefix = %v, want ErrStreamMismatch", err)
	}
}

// A transaction replayed after a restart, all of whose messages were stored
// before it, is vouched for at most at the sequence the replay resumed from
// (Acked.Capped), never at the stream's last sequence: that one lies after
// later transactions, whose ids a second restart would then not read back
// and would publish twice.
func TestCappedAck(t *testing.T) {
	js, stream := fiveMessages(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var acks ackLog
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{OnAcked: acks.add, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(runCtx) }()
	defer func() { stop(); <-done }()
	for _, a := range []sink.Acked{{Pos: "replayed", Capped: true, MaxSeq: 2}, {Pos: "resumed-at-0", Capped: true}, {Pos: "new"}} {
		if err := pub.Commit(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := acks.all()
	if len(got) != 3 || got[0].Seq != 2 || got[1].Seq != 0 || got[2].Seq != 5 {
		t.Fatalf("acked %+v, want sequences 2 (capped), 0 (capped at an empty resume) and 5 (the stream's last)", got)
	}
}

// The errors of a store without room, whatever ran out, and no other.
func TestStoreFullErrors(t *testing.T) {
	tests := []struct {
		err  error
		full bool
	}{
		{&jetstream.APIError{Code: 400, ErrorCode: 10002, Description: "resource limits exceeded for account"}, true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10047, Description: "insufficient storage resources available"}, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}, true},
		{fmt.Errorf("publish: %w", errors.New("write /data/jetstream/msgs/3.blk: no space left on device")), true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence: 41"}, false},
		{errors.New("nats: timeout"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := sink.StoreFull(tt.err); got != tt.full {
			t.Errorf("StoreFull(%v) = %v, want %v", tt.err, got, tt.full)
		}
	}
}
