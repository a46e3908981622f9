package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// The bars the project holds sluice to (issue 9), on the default workload.
const (
	barRatio     = 0.70
	barP99ms     = 50.0
	barPeakRSSMB = 200.0
	// barCollation: a backfill of a table keyed by text in a collation
	// other than C, with the index sluice check advises, over the same
	// rows keyed in C (issue 19).
	barCollation = 1.3
)

// result is one run's figures; its JSON form is for tracking over time.
type result struct {
	Kind       string `json:"kind"`
	Rows       int    `json:"rows"`
	RowBytes   int    `json:"row_bytes"`
	TxSize     int    `json:"tx_size"`
	Partitions int    `json:"partitions"`
	Replicas   int    `json:"replicas"`
	Sluice     string `json:"sluice_binary"`

	LoadSeconds float64 `json:"load_seconds"`
	// Rounds are the catch-up rounds; the figures below are their medians
	// (Ratio the median of their ratios), the peak RSS their highest.
	Rounds []round `json:"rounds"`
	// Catch-up of the backlog.
	SluiceRate     float64 `json:"sluice_events_per_sec"`
	SluiceSeconds  float64 `json:"sluice_seconds"`
	CatchUpPeakRSS int64   `json:"catch_up_peak_rss_bytes"`
	Baseline       string  `json:"baseline"`
	BaselineRate   float64 `json:"baseline_events_per_sec"`
	// The sink's limit, with and without Nats-Msg-Id.
	JetStreamRate     float64 `json:"jetstream_msgs_per_sec"`
	JetStreamNoIDRate float64 `json:"jetstream_no_msg_id_msgs_per_sec"`
	// Ratio is sluice over the slower limit; the others over each.
	Ratio          float64 `json:"ratio"`
	RatioBaseline  float64 `json:"ratio_baseline"`
	RatioJetStream float64 `json:"ratio_jetstream"`

	// Backfill of the bench table (every row the run wrote) through the
	// running sluice; all absent with --backfill=false.
	BackfillTable     string  `json:"backfill_table,omitempty"`
	BackfillRows      int64   `json:"backfill_rows,omitempty"`
	BackfillChunkSize int     `json:"backfill_chunk_size,omitempty"`
	BackfillChunks    int64   `json:"backfill_chunks,omitempty"`
	BackfillEvents    uint64  `json:"backfill_events,omitempty"` // messages stored: the rows' op "r" events and the chunk events
	BackfillSeconds   float64 `json:"backfill_seconds,omitempty"`
	BackfillRate      float64 `json:"backfill_rows_per_sec,omitempty"`
	// BackfillSinkRate is the sink's limit right after the backfill:
	// JetStream alone taking as many messages as the backfill stored, of
	// their size, with message ids. BackfillRatio is the backfill's rows/s
	// over it; BackfillRatioCatchUp over the catch-up rounds' limit
	// (JetStreamRate), measured minutes earlier.
	BackfillSinkRate     float64 `json:"backfill_sink_msgs_per_sec,omitempty"`
	BackfillRatio        float64 `json:"backfill_ratio,omitempty"`
	BackfillRatioCatchUp float64 `json:"backfill_ratio_catch_up_limit,omitempty"`
	BackfillPeakRSS      int64   `json:"backfill_peak_rss_bytes,omitempty"`
	// COPY (SELECT * FROM bench ORDER BY id) TO STDOUT of the same table,
	// and the backfill's rate over it (pg only).
	BackfillCopySeconds float64 `json:"backfill_copy_seconds,omitempty"`
	BackfillCopyRate    float64 `json:"backfill_copy_rows_per_sec,omitempty"`
	BackfillRatioCopy   float64 `json:"backfill_ratio_copy,omitempty"`

	// The collation cliff (pg only; absent with --collation-rows 0):
	// backfills, request to done, of CollationRows rows keyed by text
	// COLLATE "C", by text COLLATE "en-x-icu" with the index sluice check
	// advises (CollationIndex), and by the latter without it: the first
	// two are the medians of their runs (CollationCRuns, CollationICURuns,
	// in the order C, en-x-icu, en-x-icu, C, ...). CollationRatio is the en-x-icu time with the index
	// over the C time.
	CollationRows              int       `json:"collation_rows,omitempty"`
	CollationIndex             string    `json:"collation_index,omitempty"`
	CollationCRuns             []float64 `json:"collation_c_runs_seconds,omitempty"`
	CollationICURuns           []float64 `json:"collation_icu_runs_seconds,omitempty"`
	CollationCSeconds          float64   `json:"collation_c_seconds,omitempty"`
	CollationICUSeconds        float64   `json:"collation_icu_seconds,omitempty"`
	CollationICUNoIndexSeconds float64   `json:"collation_icu_noindex_seconds,omitempty"`
	CollationRatio             float64   `json:"collation_ratio,omitempty"`

	// Apply is `sluice apply` of the backlog into PostgreSQL (pg only;
	// absent with --apply=false).
	Apply   *applyResult   `json:"apply,omitempty"`
	Latency *latencyResult `json:"latency"`
	BigTx   *bigTxResult   `json:"big_tx,omitempty"`
	// Bars says which of the project's bars this run meets.
	Bars map[string]bool `json:"bars"`
}

type latencyResult struct {
	Rows         int     `json:"rows"`     // written, warm-up included
	Measured     int     `json:"measured"` // rows the percentiles are of
	Rate         int     `json:"rate"`
	AchievedRate float64 `json:"achieved_rate"`
	P50ms        float64 `json:"p50_ms"`
	P99ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
	PeakRSS      int64   `json:"peak_rss_bytes"`
}

// applyResult is `sluice apply` of the stream's backlog into another
// database of the bench's PostgreSQL, and COPY of the same rows there.
type applyResult struct {
	Events  int     `json:"events"` // the stream's partition messages: the backlog and the warm-up row
	Batch   int     `json:"batch"`  // apply's --batch
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"events_per_sec"`
	// COPY (pgx CopyFrom, one statement) of the backlog's rows into a new
	// table of the bench table's shape.
	CopyRows    int     `json:"copy_rows"`
	CopySeconds float64 `json:"copy_seconds"`
	CopyRate    float64 `json:"copy_rows_per_sec"`
	// Apply's rate over COPY's and over sluice's catch-up of this run.
	RatioCopy    float64 `json:"ratio_copy"`
	RatioCatchUp float64 `json:"ratio_catch_up"`
}

type bigTxResult struct {
	Rows            int     `json:"rows"`
	IdleRSS         int64   `json:"idle_rss_bytes"`
	PeakRSS         int64   `json:"peak_rss_bytes"`
	CommitToLastAck float64 `json:"commit_to_last_ack_seconds"`
}

func (r *result) finish() {
	rs := r.Rounds
	r.SluiceRate = medianOf(rs, func(rd round) float64 { return rd.SluiceRate })
	r.SluiceSeconds = medianOf(rs, func(rd round) float64 { return rd.SluiceSeconds })
	r.BaselineRate = medianOf(rs, func(rd round) float64 { return rd.BaselineRate })
	r.JetStreamRate = medianOf(rs, func(rd round) float64 { return rd.JetStreamRate })
	r.JetStreamNoIDRate = medianOf(rs, func(rd round) float64 { return rd.JetStreamNoIDRate })
	r.Ratio = medianOf(rs, func(rd round) float64 { return rd.Ratio })
	r.RatioBaseline = medianOf(rs, func(rd round) float64 { return rd.SluiceRate / rd.BaselineRate })
	r.RatioJetStream = medianOf(rs, func(rd round) float64 { return rd.SluiceRate / rd.JetStreamRate })
	r.LoadSeconds, r.CatchUpPeakRSS = 0, 0
	for _, rd := range rs {
		r.LoadSeconds += rd.LoadSeconds
		r.CatchUpPeakRSS = max(r.CatchUpPeakRSS, rd.PeakRSS)
	}
	r.Bars = map[string]bool{"ratio": r.Ratio >= barRatio}
	if r.BackfillRate > 0 {
		r.BackfillRatioCatchUp = r.BackfillRate / r.JetStreamRate
		if r.BackfillSinkRate > 0 {
			r.BackfillRatio = r.BackfillRate / r.BackfillSinkRate
		}
		if r.BackfillCopyRate > 0 {
			r.BackfillRatioCopy = r.BackfillRate / r.BackfillCopyRate
		}
	}
	if r.CollationCSeconds > 0 {
		r.CollationRatio = r.CollationICUSeconds / r.CollationCSeconds
		r.Bars["collation_ratio"] = r.CollationRatio <= barCollation
	}
	if a := r.Apply; a != nil {
		a.RatioCopy = a.Rate / a.CopyRate
		a.RatioCatchUp = a.Rate / r.SluiceRate
	}
	if r.Latency != nil {
		r.Bars["p99_latency"] = r.Latency.P99ms <= barP99ms
	}
	if r.BigTx != nil {
		r.Bars["big_tx_peak_rss"] = mb(r.BigTx.PeakRSS) <= barPeakRSSMB
	}
}

func (r *result) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *result) writeText(w io.Writer) {
	fmt.Fprintf(w, "\nsluice-bench %s: %d rows of %d bytes, %d rows a transaction, %d partitions, %d replica(s)\n\n",
		r.Kind, r.Rows, r.RowBytes, r.TxSize, r.Partitions, r.Replicas)
	t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(t, "catch-up, %d rounds alternating\tsluice\t%s\tJetStream, Msg-Id\tno Msg-Id\tratio\tpeak RSS\n", len(r.Rounds), r.Baseline)
	for _, rd := range r.Rounds {
		fmt.Fprintf(t, "  round %d\t%.0f\t%.0f\t%.0f\t%.0f\t%.2f\t%.0f MB\n", rd.N, rd.SluiceRate, rd.BaselineRate, rd.JetStreamRate, rd.JetStreamNoIDRate, rd.Ratio, mb(rd.PeakRSS))
	}
	t.Flush()
	fmt.Fprintln(w)
	t = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(t, "catch-up of the backlog, median of the rounds\tevents/s\tsluice over it\n")
	fmt.Fprintf(t, "  sluice\t%.0f\t\n", r.SluiceRate)
	fmt.Fprintf(t, "  %s (same log)\t%.0f\t%.2f\n", r.Baseline, r.BaselineRate, r.RatioBaseline)
	fmt.Fprintf(t, "  JetStream alone, Nats-Msg-Id\t%.0f\t%.2f\n", r.JetStreamRate, r.RatioJetStream)
	fmt.Fprintf(t, "  JetStream alone, no Msg-Id\t%.0f\t%.2f\n", r.JetStreamNoIDRate, r.SluiceRate/r.JetStreamNoIDRate)
	fmt.Fprintf(t, "  ratio (over the slower limit)\t\t%.2f\t%s\n", r.Ratio, bar(r.Bars["ratio"], fmt.Sprintf(">= %.2f", barRatio)))
	t.Flush()
	fmt.Fprintf(w, "  sluice's peak RSS during the catch-up: %.0f MB (highest of the rounds)\n", mb(r.CatchUpPeakRSS))
	if a := r.Apply; a != nil {
		fmt.Fprintf(w, "\nsluice apply of the backlog into PostgreSQL (another database, same server)\n")
		t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(t, "  \tevents/s\tapply over it\n")
		fmt.Fprintf(t, "  sluice apply, --batch %d, %d events\t%.0f\t\n", a.Batch, a.Events, a.Rate)
		fmt.Fprintf(t, "  COPY of the same rows, same table shape (rows/s)\t%.0f\t%.2f\n", a.CopyRate, a.RatioCopy)
		fmt.Fprintf(t, "  sluice run's catch-up (above)\t%.0f\t%.2f\n", r.SluiceRate, a.RatioCatchUp)
		t.Flush()
	}
	if r.BackfillRate > 0 {
		fmt.Fprintf(w, "\nbackfill of %s (every row of the run) through the running sluice: %d rows, %d chunks of %d, %d messages stored\n",
			r.BackfillTable, r.BackfillRows, r.BackfillChunks, r.BackfillChunkSize, r.BackfillEvents)
		t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(t, "  \trows/s\tbackfill over it\n")
		fmt.Fprintf(t, "  sluice backfill, request to done\t%.0f\t\n", r.BackfillRate)
		fmt.Fprintf(t, "  JetStream alone, Nats-Msg-Id, as many messages, right after (msgs/s)\t%.0f\t%.2f\n", r.BackfillSinkRate, r.BackfillRatio)
		fmt.Fprintf(t, "  JetStream alone, Nats-Msg-Id, catch-up rounds (above, msgs/s)\t%.0f\t%.2f\n", r.JetStreamRate, r.BackfillRatioCatchUp)
		if r.BackfillCopyRate > 0 {
			fmt.Fprintf(t, "  COPY (SELECT * ... ORDER BY key) TO STDOUT, same table\t%.0f\t%.2f\n", r.BackfillCopyRate, r.BackfillRatioCopy)
		}
		t.Flush()
		fmt.Fprintf(w, "  sluice's peak RSS during the backfill: %.0f MB\n", mb(r.BackfillPeakRSS))
	}
	if r.CollationRatio > 0 {
		r.writeCollation(w)
	}
	if l := r.Latency; l != nil {
		fmt.Fprintf(w, "\ncommit-to-delivery latency at %d rows/s (achieved %.0f), one row a transaction, %d rows after a warm-up\n", l.Rate, l.AchievedRate, l.Measured)
		fmt.Fprintf(w, "  p50 %.1f ms   p99 %.1f ms %s   max %.1f ms   peak RSS %.0f MB\n",
			l.P50ms, l.P99ms, bar(r.Bars["p99_latency"], fmt.Sprintf("<= %.0f ms", barP99ms)), l.MaxMs, mb(l.PeakRSS))
	}
	if b := r.BigTx; b != nil {
		fmt.Fprintf(w, "\none transaction of %d rows\n", b.Rows)
		fmt.Fprintf(w, "  sluice's peak RSS %.0f MB %s (%.0f MB before it), last event stored %.1f s after the commit returned (%.0f events/s)\n",
			mb(b.PeakRSS), bar(r.Bars["big_tx_peak_rss"], fmt.Sprintf("<= %.0f MB", barPeakRSSMB)), mb(b.IdleRSS),
			b.CommitToLastAck, float64(b.Rows)/b.CommitToLastAck)
	}
	fmt.Fprintf(w, "\nload: %.1f s to write the backlogs\n", r.LoadSeconds)
}

func bar(ok bool, want string) string {
	if ok {
		return "(bar " + want + ": met)"
	}
	return "(bar " + want + ": NOT met)"
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// writeCollation is the collation phase's part of the text report.
func (r *result) writeCollation(w io.Writer) {
	fmt.Fprintf(w, "\nbackfill by text key, %d rows, through the running sluice (request to done; with an index: median of %d, in turns)\n",
		r.CollationRows, len(r.CollationCRuns))
	t := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(t, "  \tseconds\tover COLLATE \"C\"\n")
	fmt.Fprintf(t, "  key COLLATE \"C\" (its primary key serves the chunk order)\t%.2f\t\n", r.CollationCSeconds)
	fmt.Fprintf(t, "  key COLLATE \"en-x-icu\", with the index sluice check advises\t%.2f\t%.2f\t%s\n",
		r.CollationICUSeconds, r.CollationRatio, bar(r.Bars["collation_ratio"], fmt.Sprintf("<= %.1f", barCollation)))
	fmt.Fprintf(t, "  key COLLATE \"en-x-icu\", without it (every chunk sorts the rest)\t%.2f\t%.2f\t\n",
		r.CollationICUNoIndexSeconds, r.CollationICUNoIndexSeconds/r.CollationCSeconds)
	t.Flush()
	fmt.Fprintf(w, "  the index: %s\n", r.CollationIndex)
}
