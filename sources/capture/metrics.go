package capture

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-cdc/sluice/sources"
)

// Metrics are the pipeline's Prometheus metrics (README "Operating").
// A nil *Metrics records nothing.
type Metrics struct {
	events     *prometheus.CounterVec
	partitions *prometheus.CounterVec
	latency    prometheus.Histogram
	reconnects prometheus.Counter
	dead       *prometheus.CounterVec
	labels     prometheus.Labels

	// The counters of events and partitions by their labels: looked up
	// once, not hashed from labels (and a table name joined) per event.
	countersMu sync.Mutex
	byEvent    map[eventKey]prometheus.Counter
	byPart     []prometheus.Counter

	mu sync.Mutex
	// handed is the commit time of the latest transaction handed to the
	// publisher, acked the latest stored; saved when the checkpoint was
	// last written.
	handed, acked sourcePoint
	saved         time.Time
	saveErr       error
	open          bool
	// full is why JetStream refuses publishes for lack of storage, since
	// fullSince; nil while it takes them.
	full      error
	fullSince time.Time
}

type sourcePoint struct {
	pos  string
	time time.Time
}

// NewMetrics registers the pipeline's metrics of one source.
func NewMetrics(reg prometheus.Registerer, source string) *Metrics {
	labels := prometheus.Labels{"source": source}
	m := &Metrics{
		labels: labels,
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_events_total", ConstLabels: labels,
			Help: "Events published, by table and op."}, []string{"table", "op"}),
		partitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_partition_events_total", ConstLabels: labels,
			Help: "Events published, by partition."}, []string{"partition"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "sluice_end_to_end_seconds", ConstLabels: labels,
			Help:    "From a transaction's commit in the database to JetStream's ack of its last event.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_source_reconnects_total", ConstLabels: labels,
			Help: "Times the source connection was lost and opened again."}),
	}
	m.dead = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_dead_letters_total", ConstLabels: labels,
		Help: "Events sent to the dead-letter subject instead of their partition, by reason (too_large)."}, []string{"reason"})
	// gauge is read when scraped, under m.mu: read sees the state whole.
	gauge := func(name, help string, read func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, ConstLabels: labels, Help: help}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return read()
		})
	}
	reg.MustRegister(m.events, m.partitions, m.latency, m.reconnects, m.dead,
		gauge("sluice_source_lag_seconds",
			"Age of the oldest transaction read but not yet stored in JetStream; 0 when everything read is stored.",
			m.lagSeconds),
		gauge("sluice_source_open",
			"1 while the source has its replication log open and streams; 0 before, and while it reconnects.",
			func() float64 {
				if m.open {
					return 1
				}
				return 0
			}),
		gauge("sluice_store_full",
			"1 while JetStream refuses publishes for lack of storage: sluice waits with its position kept.",
			func() float64 {
				if m.full != nil {
					return 1
				}
				return 0
			}),
		gauge("sluice_checkpoint_age_seconds", "Seconds since the checkpoint was last written.",
			func() float64 {
				if m.saved.IsZero() {
					return 0
				}
				return time.Since(m.saved).Seconds()
			}),
		gauge("sluice_last_event_timestamp_seconds", "Commit time of the latest transaction stored in JetStream.",
			func() float64 {
				if m.acked.time.IsZero() {
					return 0
				}
				return float64(m.acked.time.UnixNano()) / 1e9
			}),
	)
	return m
}

func (m *Metrics) deadLetter(reason string) {
	if m != nil {
		m.dead.WithLabelValues(reason).Inc()
	}
}

type eventKey struct {
	schema, table string
	op            sources.Op
}

func (m *Metrics) event(t *sources.Table, op sources.Op, partition int) {
	if m == nil {
		return
	}
	k := eventKey{t.Schema, t.Name, op}
	m.countersMu.Lock()
	c, ok := m.byEvent[k]
	if !ok {
		if m.byEvent == nil {
			m.byEvent = make(map[eventKey]prometheus.Counter)
		}
		c = m.events.WithLabelValues(t.QualifiedName(), string(op))
		m.byEvent[k] = c
	}
	for len(m.byPart) <= partition {
		m.byPart = append(m.byPart, m.partitions.WithLabelValues(strconv.Itoa(len(m.byPart))))
	}
	p := m.byPart[partition]
	m.countersMu.Unlock()
	c.Inc()
	p.Inc()
}

func (m *Metrics) handedTx(pos string, commit time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.handed = sourcePoint{pos, commit}
	m.mu.Unlock()
}

func (m *Metrics) ackedTx(pos string, commit time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.acked = sourcePoint{pos, commit}
	m.mu.Unlock()
	if !commit.IsZero() {
		m.latency.Observe(time.Since(commit).Seconds())
	}
}

func (m *Metrics) checkpointSaved(err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saveErr = err
	if err == nil {
		m.saved = time.Now()
	}
}

func (m *Metrics) reconnect() {
	if m == nil {
		return
	}
	m.reconnects.Inc()
}

func (m *Metrics) setOpen(open bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.open = open
	m.mu.Unlock()
}

// lagSeconds is called with m.mu held.
func (m *Metrics) lagSeconds() float64 {
	if m.handed.pos == "" || m.handed.pos == m.acked.pos {
		return 0
	}
	// The oldest transaction not stored is the one after the last stored:
	// at least as old as that one's commit.
	since := m.acked.time
	if since.IsZero() {
		since = m.handed.time
	}
	return time.Since(since).Seconds()
}

// Ready tells whether the pipeline is doing its job: the source has its
// log open, and the last checkpoint write succeeded.
func (m *Metrics) Ready() error {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.open {
		return errors.New("the source's log is not open (database down or unreachable?)")
	}
	if m.full != nil {
		return fmt.Errorf("the JetStream store is full since %s (%v): free space or raise nats.max_store; sluice resumes by itself",
			m.fullSince.UTC().Format(time.RFC3339), m.full)
	}
	if m.saveErr != nil {
		return errors.New("the last checkpoint write failed: " + m.saveErr.Error())
	}
	return nil
}

// storeFull records whether JetStream refuses publishes for lack of
// storage (err set) or takes them again (nil).
func (m *Metrics) storeFull(err error) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil && m.full == nil {
		m.fullSince = time.Now()
	}
	m.full = err
}
