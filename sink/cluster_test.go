package sink_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
)

// On a 3-node cluster with replicas 3, losing a node in the middle of
// publishing (the stream's leader, or a follower) loses nothing, repeats
// nothing and keeps the order. The checkpoints written meanwhile are the
// pipeline's: cmd/sluice's cluster tests lose a node under a running sluice.
func TestPublisherSurvivesNodeLoss(t *testing.T) {
	for _, kill := range []string{"leader", "follower"} {
		t.Run(kill, func(t *testing.T) {
			t.Parallel()
			publishThroughNodeLoss(t, kill)
		})
	}
}

func publishThroughNodeLoss(t *testing.T, kill string) {
	plan := natstest.NewCluster(t, 3)
	nc := plan.Connect()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stream jetstream.Stream
	err = sink.Retry(ctx, slog.New(slog.DiscardHandler), "create the stream", time.Minute, func(ctx context.Context) (err error) {
		stream, err = sink.EnsureStream(ctx, js, sink.StreamConfig{
			Name: "T", Prefix: "cdc", Source: "t", Partitions: 4, Replicas: 3, DuplicateWindow: time.Minute,
		})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var acks ackLog
	var logs strings.Builder
	log := slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))
	pub, err := sink.NewPublisher(ctx, js, stream, sink.PublisherConfig{Window: 256, OnAcked: acks.add, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- pub.Run(ctx) }()

	leader := natstest.StreamLeader(t, js, "T")
	victim := plan.ServerNamed(leader)
	if kill == "follower" {
		for i := range 3 {
			if s := plan.Server(i); s.Name() != leader {
				victim = s
				break
			}
		}
	}
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
		if i == n/4 {
			victim.Stop()
		}
		if i == 3*n/4 {
			victim.Start()
		}
	}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Minute)
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
	if acked := acks.all(); len(acked) != n/10 {
		t.Fatalf("%d commits acked, want %d", len(acked), n/10)
	}
	if kill == "leader" {
		if now := natstest.StreamLeader(t, js, "T"); now == leader && !strings.Contains(logs.String(), "republishing") {
			t.Logf("leader %s came back as leader", now)
		}
	}
	cancel()
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("killed the %s (%s): %d messages in order, %d repairs", kill, victim.Name(), n, strings.Count(logs.String(), "republishing"))
}
