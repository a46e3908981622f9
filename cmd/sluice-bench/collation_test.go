package main

import (
	"context"
	"testing"
	"time"
)

// The collation phase, small: sluice check advises the index for the
// en-x-icu table (and none for the C one), every backfill reads all rows,
// the one without the index warns, and the result carries each figure.
func TestCollationPhase(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and sluice: not in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := options{kind: "pg", rows: 1, rounds: 1, rowBytes: 100, txSize: 1, partitions: 2, replicas: 1,
		latencyRate: 1, latencyFor: time.Second, sluiceBin: buildSluice(t), collationRows: 3000}
	if err := o.validate(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pg, err := startPostgres(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.close()
	r := &run{o: o, dir: dir, db: pg}
	if err := r.writeConfig(); err != nil {
		t.Fatal(err)
	}
	if err := r.warmUp(ctx); err != nil {
		t.Fatal(err)
	}
	res := &result{}
	if err := r.collationCliff(ctx, pg, res); err != nil {
		t.Fatal(err)
	}
	res.finish()
	const want = `CREATE INDEX CONCURRENTLY "coll_icu_sluice_c" ON "public"."coll_icu" ("id" COLLATE "C")`
	if res.CollationIndex != want {
		t.Errorf("advised index %q, want %q", res.CollationIndex, want)
	}
	if res.CollationRows != 3000 || len(res.CollationCRuns) != collationRounds || len(res.CollationICURuns) != collationRounds ||
		res.CollationCSeconds <= 0 || res.CollationICUSeconds <= 0 || res.CollationICUNoIndexSeconds <= 0 ||
		res.CollationRatio != res.CollationICUSeconds/res.CollationCSeconds {
		t.Errorf("collation figures: %+v", res)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}
