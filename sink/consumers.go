package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ConsumerLag is how far a durable consumer of the event stream is
// behind, and whether it already missed events: a consumer whose next
// unacknowledged message the stream removed (max_age, limits, a purge)
// can no longer read it.
type ConsumerLag struct {
	Name    string `json:"name"`
	Pending uint64 `json:"pending"` // messages it has not been delivered yet
	// AckFloor is the last stream sequence below which everything is
	// acknowledged.
	AckFloor uint64 `json:"ack_floor"`
	// Missed counts messages it never acknowledged that the stream no
	// longer holds; non-zero means events it will never see.
	Missed uint64 `json:"missed"`
	// Oldest is when the oldest message it has not acknowledged was
	// stored; zero when it is caught up or that message is gone.
	Oldest time.Time `json:"oldest_unacked,omitzero"`
}

// Behind tells whether it missed events.
func (c ConsumerLag) Behind() bool { return c.Missed > 0 }

// ConsumerLags reads every durable consumer of the stream.
func ConsumerLags(ctx context.Context, stream jetstream.Stream) ([]ConsumerLag, error) {
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	first := info.State.FirstSeq
	var out []ConsumerLag
	list := stream.ListConsumers(ctx)
	for ci := range list.Info() {
		if ci.Config.Durable == "" {
			continue // ephemeral and ordered consumers come and go
		}
		c := ConsumerLag{Name: ci.Name, Pending: ci.NumPending, AckFloor: ci.AckFloor.Stream}
		next := c.AckFloor + 1
		if info.State.Msgs > 0 && next < first {
			c.Missed = first - next
		}
		if c.Missed == 0 && next <= info.State.LastSeq {
			m, err := stream.GetMsg(ctx, next)
			switch {
			case err == nil:
				c.Oldest = m.Time
			case !errors.Is(err, jetstream.ErrMsgNotFound):
				return nil, fmt.Errorf("consumer %s: read message %d: %w", ci.Name, next, err)
			}
		}
		out = append(out, c)
	}
	if err := list.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out, nil
}

// WatchConsumers exports, every interval until ctx ends, each durable
// consumer's pending count, lag (age of its oldest unacknowledged message)
// and whether it missed events, so an alert can fire while it can still
// catch up.
func WatchConsumers(ctx context.Context, reg prometheus.Registerer, source string, stream jetstream.Stream, interval time.Duration, log *slog.Logger) {
	labels := []string{"source", "consumer"}
	pending := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_consumer_pending",
		Help: "Messages of the event stream a durable consumer has not been delivered yet."}, labels)
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_consumer_lag_seconds",
		Help: "Age of the oldest message a durable consumer has not acknowledged; 0 when caught up. Near the stream's max_age it is about to miss events."}, labels)
	behind := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_consumer_behind_retention",
		Help: "1 when the stream removed messages a durable consumer never acknowledged: it missed events and needs a backfill."}, labels)
	reg.MustRegister(pending, lag, behind)
	t := time.NewTicker(interval)
	defer t.Stop()
	warned := map[string]bool{}
	for {
		lags, err := ConsumerLags(ctx, stream)
		if err != nil && ctx.Err() == nil {
			log.Debug("cannot read the stream's consumers", "error", err)
		}
		pending.Reset()
		lag.Reset()
		behind.Reset()
		for _, c := range lags {
			pending.WithLabelValues(source, c.Name).Set(float64(c.Pending))
			age := 0.0
			if !c.Oldest.IsZero() {
				age = time.Since(c.Oldest).Seconds()
			}
			lag.WithLabelValues(source, c.Name).Set(age)
			b := 0.0
			if c.Behind() {
				b = 1
				if !warned[c.Name] {
					warned[c.Name] = true
					log.Warn("a durable consumer fell behind the stream's retention and missed events: it needs a backfill of its tables (README \"Incidents\")",
						"consumer", c.Name, "missed", c.Missed, "ack_floor", c.AckFloor)
				}
			} else {
				delete(warned, c.Name)
			}
			behind.WithLabelValues(source, c.Name).Set(b)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
