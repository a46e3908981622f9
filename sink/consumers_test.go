package sink_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

// A durable consumer that acknowledged everything is caught up; one that
// lags has an age; one whose unacknowledged messages the stream removed
// (here: a message limit standing in for max_age) missed them.
func TestConsumerLags(t *testing.T) {
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "E", Subjects: []string{"cdc.>"}, MaxMsgs: 10})
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) {
		for range n {
			if _, err := js.Publish(ctx, "cdc.pg1.public.t.0", []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"fast", "slow"} {
		if _, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
	// An ephemeral consumer is not listed.
	if _, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{}); err != nil {
		t.Fatal(err)
	}
	consume := func(name string, n int) {
		c, err := stream.Consumer(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			got++
		}
		if got != n {
			t.Fatalf("%s fetched %d of %d", name, got, n)
		}
	}

	publish(5)
	consume("fast", 5)
	consume("slow", 2)
	lags, err := sink.ConsumerLags(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(lags) != 2 || lags[0].Name != "fast" || lags[1].Name != "slow" {
		t.Fatalf("consumers %+v, want fast and slow", lags)
	}
	if f := lags[0]; f.Pending != 0 || f.AckFloor != 5 || f.Behind() || !f.Oldest.IsZero() {
		t.Errorf("fast: %+v, want caught up", f)
	}
	if s := lags[1]; s.Pending != 3 || s.AckFloor != 2 || s.Behind() || s.Oldest.IsZero() {
		t.Errorf("slow: %+v, want 3 pending, an oldest unacknowledged message, not behind", s)
	}

	publish(20)         // the stream keeps sequences 16..25
	consume("fast", 10) // what is left of the 20
	if lags, err = sink.ConsumerLags(ctx, stream); err != nil {
		t.Fatal(err)
	}
	if f := lags[0]; f.Behind() {
		t.Errorf("fast: %+v, want not behind", f)
	}
	if s := lags[1]; !s.Behind() || s.Missed != 13 {
		t.Errorf("slow: %+v, want behind, 13 messages (3..15) missed", s)
	}
}
