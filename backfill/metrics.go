package backfill

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics exports backfill progress. A nil *Metrics records nothing.
type Metrics struct {
	rows, estimated, chunks, running *prometheus.GaugeVec
	initial                          *prometheus.GaugeVec
	gaps, ended                      *prometheus.CounterVec
	source                           string
}

// NewMetrics registers the backfill metrics of one source.
func NewMetrics(reg prometheus.Registerer, source string) *Metrics {
	labels := []string{"source", "table"}
	m := &Metrics{
		source: source,
		rows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_backfill_rows",
			Help: "Rows read by the table's current or last backfill."}, labels),
		estimated: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_backfill_rows_estimated",
			Help: "Rows the table had, by the planner's estimate, when its backfill started."}, labels),
		chunks: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_backfill_chunks",
			Help: "Chunks done by the table's current or last backfill."}, labels),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_backfill_running",
			Help: "1 while a backfill of the table is running."}, labels),
		initial: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sluice_initial_snapshot_running",
			Help: "1 while the table's initial snapshot (backfill.initial) is running: until it ends, consumers do not hold the whole table."}, labels),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_log_gaps_total",
			Help: "Lost log positions detected (and backfilled unless backfill.on_gap is fail)."}, []string{"source"}),
	}
	m.ended = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_backfills_total",
		Help: "Backfills that ended, by table and outcome (done or failed)."}, []string{"source", "table", "outcome"})
	reg.MustRegister(m.rows, m.estimated, m.chunks, m.running, m.initial, m.gaps, m.ended)
	return m
}

func (m *Metrics) observe(j Job) {
	if m == nil {
		return
	}
	m.rows.WithLabelValues(m.source, j.Table).Set(float64(j.Rows))
	m.estimated.WithLabelValues(m.source, j.Table).Set(float64(j.Estimate))
	m.chunks.WithLabelValues(m.source, j.Table).Set(float64(j.Chunks))
	running := 0.0
	if j.State == StateRunning {
		running = 1
	}
	m.running.WithLabelValues(m.source, j.Table).Set(running)
	initial := 0.0
	if j.State == StateRunning && j.Reason == ReasonInitial {
		initial = 1
	}
	m.initial.WithLabelValues(m.source, j.Table).Set(initial)
}

func (m *Metrics) gap() {
	if m == nil {
		return
	}
	m.gaps.WithLabelValues(m.source).Inc()
}

// end counts a job that ended, done or failed.
func (m *Metrics) end(j Job) {
	if m == nil {
		return
	}
	m.ended.WithLabelValues(m.source, j.Table, j.State).Inc()
}
