package main

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// BenchmarkApply applies a stored backlog of inserts into an empty target
// table with one in-process member (8 partitions, --batch 500), timed from
// its start until the target's bookkeeping counts every event.
//
//	go test -run '^$' -bench BenchmarkApply -benchtime 1x ./cmd/sluice/
func BenchmarkApply(b *testing.B) {
	const rows = 100000
	a := newApplyEnvOn(b, pgtest.New(b), pgtest.New(b), "public.items")
	a.setYAML("partitions: 4", "partitions: 8")
	a.exec(`CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text, amount numeric(12,2), at timestamptz)`)
	stop, _ := a.startRun()
	defer stop()
	for from := 1; from <= rows; from += 10000 {
		a.exec(`INSERT INTO items SELECT g, g % 100, 'row ' || g, g / 7.0, now() FROM generate_series($1::int, $2::int) g`, from, from+9999)
	}
	nc, err := a.reader.connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := a.reader.jetStream(nc)
	if err != nil {
		b.Fatal(err)
	}
	waitUntil(b, 5*time.Minute, "the backlog is in the stream", func() bool {
		s, err := js.Stream(context.Background(), a.cfg.Stream.Name)
		return err == nil && s.CachedInfo().State.Msgs >= rows+1 // and the shape
	})
	var took time.Duration
	b.ResetTimer()
	for i := range b.N {
		group := "bench" + string(rune('a'+i))
		if i > 0 {
			if _, err := a.target.Exec(context.Background(), `DROP TABLE public.items; DROP SCHEMA sluice CASCADE`); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		m := a.startApplyIn(group, "m1", true, 500)
		waitUntil(b, 10*time.Minute, "the backlog is applied", func() bool {
			var n int
			err := a.target.QueryRow(context.Background(), `SELECT coalesce(sum(events), 0) FROM sluice.apply_positions`).Scan(&n)
			return err == nil && n >= rows
		})
		took += time.Since(start)
		if err := m.stop(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(rows*b.N)/took.Seconds(), "events/s")
}
