package capture

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/sluice-cdc/sluice/sources"
)

func TestSkew(t *testing.T) {
	for _, c := range []struct {
		counts  []float64
		ratio   float64
		busiest int
	}{
		{[]float64{0, 0, 0, 0}, 0, 0},
		{[]float64{10, 10, 10, 10}, 1, 0},
		{[]float64{1, 1, 1, 97}, 3.88, 3},
		{[]float64{0, 50, 0, 0}, 4, 1},
	} {
		r, b := Skew(c.counts)
		if b != c.busiest || r < c.ratio-1e-9 || r > c.ratio+1e-9 {
			t.Errorf("Skew(%v) = %v, %d; want %v, %d", c.counts, r, b, c.ratio, c.busiest)
		}
	}
}

// Events count by table and op, and by partition, with the counters
// looked up once: two tables of the same name in different schemas stay
// apart, and a partition seen first above others counts only itself.
func TestEventCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, "s1")
	a := &sources.Table{Schema: "public", Name: "items"}
	b := &sources.Table{Schema: "shop", Name: "items"}
	m.event(a, sources.OpCreate, 3)
	m.event(a, sources.OpCreate, 3)
	m.event(a, sources.OpUpdate, 0)
	m.event(b, sources.OpCreate, 1)
	for _, c := range []struct {
		table, op string
		want      float64
	}{{"public.items", "c", 2}, {"public.items", "u", 1}, {"shop.items", "c", 1}, {"shop.items", "u", 0}} {
		var pb dto.Metric
		if err := m.events.WithLabelValues(c.table, c.op).Write(&pb); err != nil {
			t.Fatal(err)
		}
		if got := pb.GetCounter().GetValue(); got != c.want {
			t.Errorf("events %s %s = %v, want %v", c.table, c.op, got, c.want)
		}
	}
	if got, want := m.partitionCounts(4), []float64{1, 1, 0, 2}; !slices.Equal(got, want) {
		t.Errorf("partition counts = %v, want %v", got, want)
	}
}
