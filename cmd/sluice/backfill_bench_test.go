package main

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// BenchmarkBackfillVsCopy backfills a table into the stream and reads the
// same table with COPY (SELECT ... ORDER BY key) TO STDOUT, in one run, and
// reports both rates and their ratio: how close the watermarked, chunked,
// published backfill comes to PostgreSQL's own bulk export.
//
//	go test -run '^$' -bench BackfillVsCopy -benchtime 1x ./cmd/sluice/
func BenchmarkBackfillVsCopy(b *testing.B) {
	const rows = 200000
	pg := pgtest.New(b)
	e := newEnv(b, pg, "public.items")
	e.exec(`CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, note text, amount numeric(12,2), at timestamptz)`)
	e.exec(`INSERT INTO items SELECT g, g % 100, 'row ' || g, g / 7.0, now() FROM generate_series(1, $1) g`, rows)
	e.exec(`VACUUM ANALYZE items`)
	stop, logs := e.startRun()
	defer stop()
	conn := pgConn(b, pg)
	var backfill, copyDur time.Duration
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := requestBackfill(context.Background(), io.Discard, e.cfg, natsClient{}, []string{"public.items"}, nil, false); err != nil {
			b.Fatal(err)
		}
		e.waitBackfills(i+1, 10*time.Minute, logs)
		backfill += time.Since(start)

		start = time.Now()
		if _, err := conn.PgConn().CopyTo(context.Background(), io.Discard, "COPY (SELECT * FROM items ORDER BY id) TO STDOUT"); err != nil {
			b.Fatal(err)
		}
		copyDur += time.Since(start)
	}
	b.StopTimer()
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "chunk emitted") && strings.Contains(l, "-5") {
			b.Log(l)
		}
	}
	n := float64(rows * b.N)
	b.ReportMetric(n/backfill.Seconds(), "backfill_rows/s")
	b.ReportMetric(n/copyDur.Seconds(), "copy_rows/s")
	b.ReportMetric(copyDur.Seconds()/backfill.Seconds(), "backfill/copy")
}
