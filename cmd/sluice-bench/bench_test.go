package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/backfill"
)

// buildSluice builds the sluice binary the bench runs.
func buildSluice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	out, err := exec.Command("go", "build", "-o", bin, "../sluice").CombinedOutput()
	if err != nil {
		t.Fatalf("build sluice: %v\n%s", err, out)
	}
	return bin
}

// TestBench runs the whole bench, small, on both databases, and checks
// that every figure is there and consistent, and that --json carries a
// numeric ratio. --apply and --backfill are on for both: pg measures
// sluice apply and COPY, mysql leaves them out; both backfill, and pg
// COPYs the table out as well.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, MariaDB and sluice: not in -short")
	}
	bin := buildSluice(t)
	for _, kind := range []string{"pg", "mysql"} {
		t.Run(kind, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			profiles := t.TempDir()
			o := options{kind: kind, rows: 5000, rounds: 2, rowBytes: 100, txSize: 50, partitions: 4, replicas: 1,
				latencyRate: 400, latencyFor: time.Second, bigTxRows: 20000, sluiceBin: bin, profileDir: profiles, apply: true, backfill: true}
			if err := o.validate(); err != nil {
				t.Fatal(err)
			}
			r, err := bench(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			for name, v := range map[string]float64{"sluice": r.SluiceRate, "baseline": r.BaselineRate,
				"jetstream": r.JetStreamRate, "jetstream without ids": r.JetStreamNoIDRate} {
				if v <= 0 {
					t.Errorf("%s rate = %v, want > 0", name, v)
				}
			}
			// Each round has its backlog and limits; the figures are the
			// medians, of two rounds their means.
			if len(r.Rounds) != 2 {
				t.Fatalf("%d rounds, want 2", len(r.Rounds))
			}
			for i, rd := range r.Rounds {
				if rd.N != i+1 || rd.SluiceRate <= 0 || rd.BaselineRate <= 0 || rd.JetStreamRate <= 0 || rd.JetStreamNoIDRate <= 0 || rd.PeakRSS <= 0 ||
					rd.Ratio != rd.SluiceRate/min(rd.BaselineRate, rd.JetStreamRate) {
					t.Errorf("round %d = %+v, want positive figures and its ratio over its slower limit", i+1, rd)
				}
			}
			a, b := r.Rounds[0], r.Rounds[1]
			if r.Ratio != (a.Ratio+b.Ratio)/2 || r.SluiceRate != (a.SluiceRate+b.SluiceRate)/2 || r.CatchUpPeakRSS != max(a.PeakRSS, b.PeakRSS) {
				t.Errorf("ratio %v, sluice %v, peak RSS %d: want the rounds' medians and highest peak", r.Ratio, r.SluiceRate, r.CatchUpPeakRSS)
			}
			if l := r.Latency; l == nil || l.Measured != 400 || l.P50ms > l.P99ms || l.P99ms > l.MaxMs || l.PeakRSS <= 0 {
				t.Errorf("latency = %+v, want 400 measured rows with p50 <= p99 <= max", l)
			}
			if b := r.BigTx; b == nil || b.Rows != 20000 || b.PeakRSS < b.IdleRSS || b.IdleRSS <= 0 || b.CommitToLastAck <= 0 {
				t.Errorf("big transaction = %+v", b)
			}
			// Apply runs last: every row of the run, the backlogs with the
			// warm-up row, the latency rows and the big transaction.
			want := 2*5000 + 1
			if r.Latency != nil && r.BigTx != nil {
				want += r.Latency.Rows + r.BigTx.Rows
			}
			switch a := r.Apply; {
			case kind == "mysql" && a != nil:
				t.Errorf("apply = %+v, want none for mysql", a)
			case kind == "pg" && (a == nil || a.Events != want || a.Rate <= 0 || a.CopyRows != 5000 || a.CopyRate <= 0 ||
				a.RatioCopy != a.Rate/a.CopyRate || a.RatioCatchUp != a.Rate/r.SluiceRate):
				t.Errorf("apply = %+v, want %d events applied, 5000 rows copied, and the ratios of this run", a, want)
			}
			if r.CatchUpPeakRSS <= 0 {
				t.Errorf("catch-up peak RSS = %d", r.CatchUpPeakRSS)
			}
			// The backfill runs last, on every row the run wrote, in chunks
			// of the default size; COPY reads the same table on pg only.
			if r.BackfillRows != int64(want) || r.BackfillChunkSize != backfill.DefaultChunkSize ||
				r.BackfillChunks < int64(want/backfill.DefaultChunkSize) || r.BackfillEvents < uint64(want) ||
				r.BackfillRate <= 0 || r.BackfillSinkRate <= 0 || r.BackfillRatio != r.BackfillRate/r.BackfillSinkRate ||
				r.BackfillRatioCatchUp != r.BackfillRate/r.JetStreamRate || r.BackfillPeakRSS <= 0 {
				t.Errorf("backfill: %d rows, chunks of %d (%d), %d events, %v rows/s, ratio %v over %v, %v over the catch-up's limit, peak RSS %d; want %d rows in chunks of %d, as many events at least, the ratios over JetStream's %v and %v",
					r.BackfillRows, r.BackfillChunkSize, r.BackfillChunks, r.BackfillEvents, r.BackfillRate, r.BackfillRatio, r.BackfillSinkRate, r.BackfillRatioCatchUp, r.BackfillPeakRSS,
					want, backfill.DefaultChunkSize, r.BackfillSinkRate, r.JetStreamRate)
			}
			switch {
			case kind == "mysql" && (r.BackfillCopyRate != 0 || r.BackfillRatioCopy != 0):
				t.Errorf("backfill COPY = %v rows/s, ratio %v, want none for mysql", r.BackfillCopyRate, r.BackfillRatioCopy)
			case kind == "pg" && (r.BackfillCopyRate <= 0 || r.BackfillRatioCopy != r.BackfillRate/r.BackfillCopyRate):
				t.Errorf("backfill COPY = %v rows/s, ratio %v, want the backfill's rate over it", r.BackfillCopyRate, r.BackfillRatioCopy)
			}
			for _, p := range []string{"catch-up.cpu", "catch-up.heap", "big-tx.cpu", "big-tx.heap", "backfill.cpu", "backfill.heap"} {
				if st, err := os.Stat(filepath.Join(profiles, p+".pprof")); err != nil || st.Size() == 0 {
					t.Errorf("profile %s: %v", p, err)
				}
			}

			var buf bytes.Buffer
			if err := r.writeJSON(&buf); err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if ratio, ok := got["ratio"].(float64); !ok || ratio != r.Ratio {
				t.Errorf("JSON ratio = %v (%T), want the number %v", got["ratio"], got["ratio"], r.Ratio)
			}
			texts := []string{"ratio (over the slower limit)", "round 2", "p99", "peak RSS",
				"backfill of " + r.BackfillTable, "request to done", "as many messages, right after", "peak RSS during the backfill"}
			backfillKeys := []string{"backfill_rows_per_sec", "backfill_ratio", "backfill_sink_msgs_per_sec", "backfill_ratio_catch_up_limit", "backfill_peak_rss_bytes"}
			if kind == "pg" {
				backfillKeys = append(backfillKeys, "backfill_copy_rows_per_sec", "backfill_ratio_copy")
				texts = append(texts, "COPY (SELECT * ... ORDER BY key) TO STDOUT")
			} else if _, ok := got["backfill_copy_rows_per_sec"]; ok {
				t.Errorf("JSON has backfill_copy_rows_per_sec for mysql")
			}
			for _, k := range backfillKeys {
				if v, ok := got[k].(float64); !ok || v <= 0 {
					t.Errorf("JSON %s = %v, want a positive number", k, got[k])
				}
			}
			if r.Apply != nil {
				a, _ := got["apply"].(map[string]any)
				for _, k := range []string{"events_per_sec", "copy_rows_per_sec", "ratio_copy", "ratio_catch_up"} {
					if v, ok := a[k].(float64); !ok || v <= 0 {
						t.Errorf("JSON apply.%s = %v, want a positive number", k, a[k])
					}
				}
				texts = append(texts, "sluice apply", "COPY of the same rows", "sluice run's catch-up")
			}
			buf.Reset()
			r.writeText(&buf)
			for _, want := range texts {
				if !strings.Contains(buf.String(), want) {
					t.Errorf("text report lacks %q:\n%s", want, buf.String())
				}
			}
		})
	}
}

// TestNoBackfillNoFigures checks that a run with --backfill=false reports
// no backfill: no JSON key, no text section, no ratio made of zeros.
func TestNoBackfillNoFigures(t *testing.T) {
	r := &result{Kind: "pg", Rows: 10, Rounds: []round{{N: 1, SluiceRate: 100, BaselineRate: 200, JetStreamRate: 300, JetStreamNoIDRate: 400, Ratio: 0.5}}}
	r.finish()
	var buf bytes.Buffer
	if err := r.writeJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "backfill") {
		t.Errorf("JSON without a backfill mentions one:\n%s", buf.String())
	}
	buf.Reset()
	r.writeText(&buf)
	if strings.Contains(buf.String(), "backfill") {
		t.Errorf("text without a backfill mentions one:\n%s", buf.String())
	}
}

func TestOptionsErrorsNameTheFix(t *testing.T) {
	base := options{kind: "pg", rows: 1, rounds: 1, rowBytes: 100, txSize: 1, partitions: 1, replicas: 1,
		latencyRate: 1, latencyFor: time.Second, sluiceBin: os.Args[0]}
	for _, c := range []struct {
		change func(*options)
		want   string
	}{
		{func(o *options) { o.kind = "oracle" }, "use pg or mysql"},
		{func(o *options) { o.rowBytes = 4 }, "--row-bytes 4: use at least 9"},
		{func(o *options) { o.rounds = 0 }, "--rounds 0: use at least 1"},
		{func(o *options) { o.replicas = 2 }, "--replicas 2: use 1 or 3"},
		{func(o *options) { o.sluiceBin = "/nonexistent/sluice" }, "--sluice /nonexistent/sluice"},
	} {
		o := base
		c.change(&o)
		if err := o.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validate() = %v, want it to say %q", err, c.want)
		}
	}
}
