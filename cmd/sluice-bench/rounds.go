package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// round is one catch-up round: a backlog of its own read by the database
// baseline and by sluice, and the JetStream limits measured right after,
// on as many messages of sluice's size.
type round struct {
	N                 int     `json:"round"` // from 1
	SluiceRate        float64 `json:"sluice_events_per_sec"`
	SluiceSeconds     float64 `json:"sluice_seconds"`
	BaselineRate      float64 `json:"baseline_events_per_sec"`
	JetStreamRate     float64 `json:"jetstream_msgs_per_sec"`
	JetStreamNoIDRate float64 `json:"jetstream_no_msg_id_msgs_per_sec"`
	// Ratio is sluice over the slower of the baseline and JetStream with
	// message ids, in this round.
	Ratio       float64 `json:"ratio"`
	PeakRSS     int64   `json:"peak_rss_bytes"`
	LoadSeconds float64 `json:"load_seconds"`
	// Leader is the server that led sluice's stream at the round's end
	// (replicas 3; sluice's own embedded server is n1).
	Leader string `json:"stream_leader,omitempty"`
}

// round writes round i's backlog (rows [i*rows+1, (i+1)*rows]) while
// sluice is stopped, then has the baseline, sluice and JetStream alone
// take it, in that order.
func (r *run) round(ctx context.Context, i int) (round, error) {
	o := r.o
	rd := round{N: i + 1}
	base, err := r.db.prepareBaseline(ctx)
	if err != nil {
		return rd, err
	}
	r.baseline = base.name()
	step("round %d of %d: writing the backlog: %d rows of %d bytes, %d rows a transaction, sluice stopped", rd.N, o.rounds, o.rows, o.rowBytes, o.txSize)
	start := time.Now()
	bar := newBar(o.rows, "rows")
	if err := r.db.load(ctx, i*o.rows+1, o.rows, o.txSize, o.rowBytes, func(n int) { _ = bar.Add(n) }); err != nil {
		return rd, err
	}
	_ = bar.Finish()
	rd.LoadSeconds = time.Since(start).Seconds()

	step("round %d: %s reads the backlog", rd.N, base.name())
	took, err := base.read(ctx, o.rows)
	if err != nil {
		return rd, err
	}
	rd.BaselineRate = float64(o.rows) / took.Seconds()

	step("round %d: sluice reads the backlog and publishes it", rd.N)
	size, err := r.catchUp(ctx, &rd)
	if err != nil {
		return rd, err
	}

	step("round %d: embedded JetStream alone takes %d messages of %d bytes (async publish, with and without Nats-Msg-Id)", rd.N, o.rows, size.data)
	dir := filepath.Join(r.dir, fmt.Sprintf("limit-%d", rd.N))
	defer os.RemoveAll(dir)
	if rd.JetStreamRate, err = jetStreamLimit(ctx, filepath.Join(dir, "id"), o, size, true, rd.Leader); err != nil {
		return rd, err
	}
	if rd.JetStreamNoIDRate, err = jetStreamLimit(ctx, filepath.Join(dir, "no-id"), o, size, false, rd.Leader); err != nil {
		return rd, err
	}
	rd.Ratio = rd.SluiceRate / min(rd.BaselineRate, rd.JetStreamRate)
	return rd, nil
}

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// medianOf is the median of one figure over rounds.
func medianOf(rounds []round, figure func(round) float64) float64 {
	xs := make([]float64, len(rounds))
	for i, rd := range rounds {
		xs[i] = figure(rd)
	}
	return median(xs)
}
