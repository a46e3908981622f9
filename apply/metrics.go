package apply

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are apply's Prometheus metrics (README "Consuming at scale").
type metrics struct {
	events    *prometheus.CounterVec
	skipped   prometheus.Counter
	retries   prometheus.Counter
	retention prometheus.Counter
	txs       prometheus.Counter
	txSeconds prometheus.Histogram
	seq       []prometheus.Gauge
	lag       []prometheus.Gauge
	pending   []prometheus.Gauge
	ownedG    prometheus.Gauge

	totalN atomic.Uint64
	nOwned atomic.Int64
	mu     sync.Mutex
	lagOf  []time.Duration
	pendOf []float64
}

func newMetrics(reg prometheus.Registerer, source string, partitions int) (*metrics, error) {
	src := prometheus.Labels{"source": source}
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_apply_events_total",
			Help: "Events applied to the target (each once), by partition.", ConstLabels: src}, []string{"partition"}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_apply_redelivered_skipped_total",
			Help: "Messages delivered again after their events were applied, skipped.", ConstLabels: src}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_apply_retries_total",
			Help: "Batches tried again after a failure that passes (target restarting, deadlock, timeout).", ConstLabels: src}),
		retention: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_apply_retention_warnings_total",
			Help: "Times a partition's next event came after events the stream's retention removed before they were applied.", ConstLabels: src}),
		txs: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_apply_transactions_total",
			Help: "Transactions committed in the target.", ConstLabels: src}),
		txSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_apply_transaction_seconds",
			Help: "Time from a batch's first message to its commit.", ConstLabels: src,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		ownedG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_apply_partitions_owned",
			Help: "Partitions this member applies now.", ConstLabels: src}),
		lagOf:  make([]time.Duration, partitions),
		pendOf: make([]float64, partitions),
	}
	cs := []prometheus.Collector{m.events, m.skipped, m.retries, m.retention, m.txs, m.txSeconds, m.ownedG}
	for p := range partitions {
		l := prometheus.Labels{"source": source, "partition": strconv.Itoa(p)}
		m.seq = append(m.seq, prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_apply_position",
			Help: "Stream sequence of the last event this member applied, by partition.", ConstLabels: l}))
		m.lag = append(m.lag, prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_apply_lag_seconds",
			Help: "Age of the last event applied when more were waiting (0 once caught up), by partition.", ConstLabels: l}))
		m.pending = append(m.pending, prometheus.NewGauge(prometheus.GaugeOpts{Name: "sluice_apply_pending",
			Help: "Messages of the partition not yet delivered to its owner, as of its last batch.", ConstLabels: l}))
		cs = append(cs, m.seq[p], m.lag[p], m.pending[p])
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("apply: register metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) owned(owned bool) {
	d := int64(-1)
	if owned {
		d = 1
	}
	m.ownedG.Set(float64(m.nOwned.Add(d)))
}

// applied records a committed batch of partition p.
func (m *metrics) applied(p int, events, seq uint64, lastTs int64, took time.Duration, pending uint64) {
	m.events.WithLabelValues(strconv.Itoa(p)).Add(float64(events))
	m.totalN.Add(events)
	m.txs.Inc()
	m.txSeconds.Observe(took.Seconds())
	m.seq[p].Set(float64(seq))
	var lag time.Duration
	if pending > 0 && lastTs > 0 {
		lag = max(0, time.Since(time.UnixMilli(lastTs)))
	}
	m.lag[p].Set(lag.Seconds())
	m.pending[p].Set(float64(pending))
	m.mu.Lock()
	m.lagOf[p], m.pendOf[p] = lag, float64(pending)
	m.mu.Unlock()
}

func (m *metrics) total() uint64 { return m.totalN.Load() }

// snapshot is the total pending, the largest lag and the partitions owned.
func (m *metrics) snapshot() (pending uint64, lag time.Duration, owned int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for p := range m.lagOf {
		pending += uint64(m.pendOf[p])
		lag = max(lag, m.lagOf[p])
	}
	return pending, lag, m.nOwned.Load()
}
