package consumer_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

// BenchmarkGroupThroughput is what one group member handles per second
// over 8 partitions of a stored backlog, with an empty handler: the cost of
// one message in flight per partition (MaxAckPending 1) and a confirmed
// ack each. `go test -run '^$' -bench GroupThroughput ./sink/consumer/`
func BenchmarkGroupThroughput(b *testing.B) {
	natstest.SkipShort(b)
	e := newGroupEnv(b)
	for i := range b.N {
		if _, err := e.js.PublishAsync(fmt.Sprintf("cdc.%s.public.t.%d", grpSource, i%grpPartitions), []byte(`{"op":"c","key":{"id":1},"after":{"id":1}}`)); err != nil {
			b.Fatal(err)
		}
	}
	<-e.js.PublishAsyncComplete()
	mjs, err := jetstream.New(e.connect(1))
	if err != nil {
		b.Fatal(err)
	}
	var handled atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	err = consumer.RunGroup(ctx, mjs, consumer.GroupConfig{Stream: grpStream, Prefix: "cdc", Source: grpSource, Partitions: grpPartitions, Group: "bench", TakeoverAfter: consumer.MinTakeoverAfter},
		func(context.Context, int, jetstream.Msg) error {
			if handled.Add(1) == int64(b.N) {
				cancel()
			}
			return nil
		})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}
