package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// latency commits rows one per transaction at LatencyRate rows/s for
// LatencyFor, and times each from the commit returning to the client until
// a consumer of the stream receives it: commit-to-ack plus one delivery,
// so it errs on the slow side.
func (r *run) latency(ctx context.Context, from int) (*latencyResult, error) {
	p, nc, s, err := r.start(ctx, "")
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	defer p.stop()

	// The first half second (after the first row has arrived, see below)
	// warms up (connections fill their buffers) and is not counted.
	warm := max(r.o.latencyRate/2, 1)
	measured := max(int(float64(r.o.latencyRate)*r.o.latencyFor.Seconds()), 1)
	n := warm + measured
	committed := make([]atomic.Int64, n)
	received := make([]atomic.Int64, n)
	var got atomic.Int64
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, err
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		now := time.Now().UnixNano()
		if i := rowIndex(m.Data(), from, n); i >= 0 && received[i].CompareAndSwap(0, now) {
			got.Add(1)
		}
	})
	if err != nil {
		return nil, err
	}
	defer cc.Stop()

	interval := time.Second / time.Duration(r.o.latencyRate)
	body := payload(from, r.o.rowBytes-8)
	// The first row is awaited before the rest are written. A slot's
	// restart_lsn lags its confirmed position, so PostgreSQL decodes the
	// backlogs again (skipping what is confirmed) when sluice reconnects:
	// seconds after the rounds' millions of rows, which a timed warm-up
	// alone did not outlast (p99 255 ms). Latency is of streaming, not of
	// that restart.
	if err := r.db.insertOne(ctx, from, body); err != nil {
		return nil, fmt.Errorf("latency write: %w", err)
	}
	committed[0].Store(time.Now().UnixNano())
	for deadline := time.Now().Add(5 * time.Minute); received[0].Load() == 0; {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the first latency row did not arrive within 5m: see %s", r.logPath())
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	for i := 1; i < n; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := r.db.insertOne(ctx, from+i, body); err != nil {
			return nil, fmt.Errorf("latency write: %w", err)
		}
		committed[i].Store(time.Now().UnixNano())
	}
	writing := time.Since(start)
	deadline := time.Now().Add(time.Minute)
	for got.Load() < int64(n) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d latency rows arrived within 1m of the last commit", got.Load(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	lat := make([]time.Duration, 0, measured)
	for i := warm; i < n; i++ {
		// A delivery can beat the client's view of its own commit.
		lat = append(lat, max(time.Duration(received[i].Load()-committed[i].Load()), 0))
	}
	slices.Sort(lat)
	peak, err := p.peakRSS()
	if err != nil {
		return nil, err
	}
	return &latencyResult{
		Rows:         n,
		Measured:     measured,
		Rate:         r.o.latencyRate,
		AchievedRate: float64(n-1) / writing.Seconds(),
		P50ms:        ms(lat[measured/2]),
		P99ms:        ms(lat[min(measured*99/100, measured-1)]),
		MaxMs:        ms(lat[measured-1]),
		PeakRSS:      peak,
	}, nil
}

// rowIndex is the index of the latency row an event carries, or -1.
func rowIndex(data []byte, from, n int) int {
	var ev struct {
		After struct {
			ID json.RawMessage `json:"id"`
		} `json:"after"`
	}
	if json.Unmarshal(data, &ev) != nil {
		return -1
	}
	id, err := strconv.Atoi(strings.Trim(string(ev.After.ID), `"`))
	if err != nil || id < from || id >= from+n {
		return -1
	}
	return id - from
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
