package capture

import (
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsGauges reads every gauge through a scrape, as Prometheus
// does: each reads the state under the lock the writers take (a read that
// took it again would hang here).
func TestMetricsGauges(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "t")
	gauges := func() map[string]float64 {
		t.Helper()
		done := make(chan map[string]float64, 1)
		go func() {
			mfs, err := reg.Gather()
			if err != nil {
				t.Error(err)
			}
			got := map[string]float64{}
			for _, mf := range mfs {
				if g := mf.GetMetric()[0].GetGauge(); g != nil {
					got[mf.GetName()] = g.GetValue()
				}
			}
			done <- got
		}()
		select {
		case got := <-done:
			return got
		case <-time.After(10 * time.Second):
			t.Fatal("a scrape hangs")
			return nil
		}
	}

	for name, v := range gauges() {
		if v != 0 {
			t.Errorf("%s = %v before anything happened, want 0", name, v)
		}
	}
	if n := len(gauges()); n != 5 {
		t.Errorf("%d gauges, want 5", n)
	}

	commit := time.Now().Add(-time.Hour)
	m.handedTx("2", commit)
	m.ackedTx("1", commit)
	m.checkpointSaved(nil)
	m.storeFull(errors.New("insufficient resources"))
	m.setOpen(true)
	got := gauges()
	if v := got["sluice_source_open"]; v != 1 {
		t.Errorf("sluice_source_open = %v while the log is open, want 1", v)
	}
	if v := got["sluice_store_full"]; v != 1 {
		t.Errorf("sluice_store_full = %v while the store is full, want 1", v)
	}
	if v, want := got["sluice_last_event_timestamp_seconds"], float64(commit.UnixNano())/1e9; v != want {
		t.Errorf("sluice_last_event_timestamp_seconds = %v, want %v", v, want)
	}
	if v := got["sluice_source_lag_seconds"]; v < 3600 || v > 3700 {
		t.Errorf("sluice_source_lag_seconds = %v, want about an hour (the last stored commit's age)", v)
	}
	if v := got["sluice_checkpoint_age_seconds"]; v <= 0 || v > 60 {
		t.Errorf("sluice_checkpoint_age_seconds = %v just after a write, want a little above 0", v)
	}
}
