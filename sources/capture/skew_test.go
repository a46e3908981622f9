package capture

import "testing"

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
