//go:build !race

// The million-row test runs without the race detector, which would make it
// take many minutes: `make test` runs it in a second, plain go test.

package main

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// TestBackfillMillionRowsUnderLoad backfills a 1,000,000-row table while
// updates, deletes and inserts hit the same keys: the consumer's view ends
// equal to the table, and no backfilled row overwrote a newer logged change.
func TestBackfillMillionRowsUnderLoad(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("a million rows: skipped in -short")
	}
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL)`)
	e.exec(`INSERT INTO items SELECT g, 0 FROM generate_series(1, 1000000) g`)
	e.exec(`ANALYZE items`)
	conn := pgConn(t, pg)
	e.backfill = []string{"public.items"}
	start := time.Now()
	stop, logs := e.startRun()

	var updates, deletes, inserts atomic.Int64
	stopWriter := startWriter(t, 9, 0, func(rng *rand.Rand) error {
		// Hot keys: most changes land on a few thousand ids, so many hit a
		// chunk while it is between its watermarks.
		id := 1 + rng.IntN(1000000)
		if rng.IntN(2) == 0 {
			id = 1 + rng.IntN(5000)*200
		}
		var err error
		switch r := rng.IntN(10); {
		case r == 0:
			_, err = conn.Exec(context.Background(), "DELETE FROM items WHERE id = $1", id)
			deletes.Add(1)
		case r == 1:
			_, err = conn.Exec(context.Background(), "INSERT INTO items VALUES ($1, 0) ON CONFLICT (id) DO UPDATE SET v = items.v + 1", 1000000+rng.IntN(1000))
			inserts.Add(1)
		default:
			_, err = conn.Exec(context.Background(), "UPDATE items SET v = v + 1 WHERE id = $1", id)
			updates.Add(1)
		}
		return err
	})
	e.waitBackfills(1, 15*time.Minute, logs)
	took := time.Since(start)
	stopWriter()
	events := assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: "pg1", Schema: "public", Table: "items"}, pgState(conn))
	assertNoStaleRead(t, events)
	reads, kept := 0, 0
	for _, ev := range events {
		switch ev.Op {
		case "r":
			reads++
		case "chunk":
			var c struct {
				Chunk struct{ Keep []json.RawMessage } `json:"chunk"`
			}
			if err := json.Unmarshal([]byte(ev.raw), &c); err != nil {
				t.Fatal(err)
			}
			kept += len(c.Chunk.Keep)
		}
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "backfill done") {
			t.Log(line)
		}
	}
	t.Logf("backfilled 1,000,000 rows in %s with %d updates, %d deletes, %d inserts running; %d rows published as r (chunk boundaries are read twice), %d keys left to the log's newer events (keep)",
		took.Round(time.Millisecond), updates.Load(), deletes.Load(), inserts.Load(), reads, kept)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
