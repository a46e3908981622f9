package capture

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// SkewConfig sets when a partition counts as hot.
type SkewConfig struct {
	// Factor: a partition is hot when its events over Window exceed
	// Factor times the mean of all partitions.
	Factor float64
	Window time.Duration
}

// WatchSkew measures, every window, how unevenly events spread over the
// partitions: sluice_partition_skew is the busiest partition's count over
// the mean, and a hot partition is logged and counted. It returns when ctx
// ends.
func (m *Metrics) WatchSkew(ctx context.Context, reg prometheus.Registerer, partitions int, cfg SkewConfig, log *slog.Logger) {
	if m == nil || partitions < 2 || cfg.Window <= 0 {
		return
	}
	skew := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_partition_skew", ConstLabels: m.labels,
		Help: "Events of the busiest partition over the mean of all partitions, in the last window."})
	hot := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_hot_partitions_total", ConstLabels: m.labels,
		Help: "Windows in which a partition exceeded the hot-partition factor."}, []string{"partition"})
	reg.MustRegister(skew, hot)
	prev := make([]float64, partitions)
	t := time.NewTicker(cfg.Window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := m.partitionCounts(partitions)
		delta := make([]float64, partitions)
		for i := range now {
			delta[i] = now[i] - prev[i]
		}
		prev = now
		ratio, busiest := Skew(delta)
		skew.Set(ratio)
		if cfg.Factor > 0 && ratio > cfg.Factor {
			hot.WithLabelValues(strconv.Itoa(busiest)).Inc()
			log.Warn("hot partition: one partition takes far more events than the others; consumers of it lag first (a hot key? see README \"Subjects and partitions\")",
				"partition", busiest, "events", delta[busiest], "times_the_mean", ratio, "window", cfg.Window)
		}
	}
}

// Skew returns the busiest partition's count over the mean, and which it
// is; 0 when nothing happened.
func Skew(counts []float64) (ratio float64, busiest int) {
	total := 0.0
	for i, c := range counts {
		total += c
		if c > counts[busiest] {
			busiest = i
		}
	}
	if total == 0 {
		return 0, 0
	}
	return counts[busiest] / (total / float64(len(counts))), busiest
}

func (m *Metrics) partitionCounts(partitions int) []float64 {
	out := make([]float64, partitions)
	for i := range out {
		c, err := m.partitions.GetMetricWithLabelValues(strconv.Itoa(i))
		if err != nil {
			continue
		}
		var pb dto.Metric
		if c.Write(&pb) == nil && pb.Counter != nil {
			out[i] = pb.Counter.GetValue()
		}
	}
	return out
}
