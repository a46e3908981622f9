package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
)

// The replicas-3 limit's stream can be given the leader sluice's stream
// had: moveLeader hands it to each member in turn, the current leader
// never among the targets, so every move is one the election alone would
// not have made.
func TestLimitLeaderMoves(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node NATS cluster")
	}
	url, stop, err := startLimitServers(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = sink.Retry(ctx, discardLogger(), "create the stream", time.Minute, func(ctx context.Context) error {
		_, err := sink.EnsureStream(ctx, js, sink.StreamConfig{Name: "LIMIT", Prefix: "cdc", Source: "bench", Partitions: 2, Replicas: 3})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	leader := func() string {
		for {
			s, err := js.Stream(ctx, "LIMIT")
			if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader != "" {
				return s.CachedInfo().Cluster.Leader
			}
			if ctx.Err() != nil {
				t.Fatalf("stream LIMIT has no leader: %v", err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for range 3 {
		from := leader()
		to := map[string]string{"n1": "n2", "n2": "n3", "n3": "n1"}[from]
		if err := moveLeader(ctx, nc, js, "LIMIT", to); err != nil {
			t.Fatal(err)
		}
		if got := leader(); got != to {
			t.Fatalf("moved the leader from %s to %s, and %s leads", from, to, got)
		}
	}
}
