package capture_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
)

// testStream is the stream of source t, 4 partitions, on one server.
func testStream(t testing.TB, js jetstream.JetStream) jetstream.Stream {
	t.Helper()
	s, err := sink.EnsureStream(context.Background(), js, sink.StreamConfig{
		Name: "T", Prefix: "cdc", Source: "t", Partitions: 4, Replicas: 1, DuplicateWindow: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// readAll returns the ids of every message in the stream, in stream order.
func readAll(t testing.TB, s jetstream.Stream) []string {
	t.Helper()
	ctx := context.Background()
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		ids = append(ids, m.Header.Get(jetstream.MsgIDHeader))
	}
	return ids
}
