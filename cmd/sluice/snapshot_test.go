package main

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/consumer"
)

// TestInitialSnapshot: with default settings, no flag, a first
// start on a table that already holds rows gives consumers the whole table
// plus the changes made meanwhile; a table added to the config later is
// snapshotted on the restart, the first one not again.
func TestInitialSnapshot(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "items")
		initialSnapshotTest(t, e, conn, db.schema)
	})
}

func initialSnapshotTest(t *testing.T, e *env, db crashDB, schema string) {
	const rows = 3000
	seed := testSeed(t)
	// The defaults: the harness turns the initial snapshot off for the
	// tests written before it.
	e.setYAML("backfill: {initial: false}", "backfill: {chunk_size: 200}")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)`)
	e.exec(`CREATE TABLE later (id INT PRIMARY KEY, v INT NOT NULL)`)
	e.exec(`INSERT INTO items VALUES ` + valuesList(1, rows))
	e.exec(`INSERT INTO later VALUES ` + valuesList(1, 300))

	stop, logs := e.startRun()
	var next atomic.Int64
	next.Store(rows)
	stopWriter := startWriter(t, seed, time.Millisecond, func(rng *rand.Rand) error {
		id := next.Add(1)
		return db.tx([]string{
			fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", 1+rng.IntN(rows)),
			fmt.Sprintf("INSERT INTO items VALUES (%d, 0)", id),
			fmt.Sprintf("DELETE FROM items WHERE id = %d", 1+rng.IntN(rows)),
		})
	})
	e.waitBackfills(1, 2*time.Minute, logs)
	stopWriter()
	assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: e.cfg.Source.Name, Schema: schema, Table: "items"}, db.state)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	assertQueued(t, logs.String(), map[string]int{schema + ".items": 1, schema + ".later": 0})

	// A table joins the config: only it is snapshotted.
	e.setYAML("tables: ["+schema+".items]", "tables: ["+schema+".items, "+schema+".later]")
	stop, logs = e.startRun()
	e.waitBackfills(1, time.Minute, logs)
	// Chunks overlap by their boundary row: count keys.
	read := map[string]bool{}
	for _, ev := range readEvents(t, e.natsURL(), e.cfg.Stream.Name, int(streamCount(t, e.natsURL(), e.cfg.Stream.Name)), time.Minute) {
		if ev.Source.Table == "later" && ev.Op == "r" {
			read[string(ev.Key["id"])] = true
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	assertQueued(t, logs.String(), map[string]int{schema + ".items": 0, schema + ".later": 1})
	if len(read) != 300 {
		t.Errorf("the table added to the config arrived with %d rows, want 300", len(read))
	}
	// A third start snapshots nothing.
	stop, logs = e.startRun()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	assertQueued(t, logs.String(), map[string]int{schema + ".items": 0, schema + ".later": 0})
}

// assertQueued checks how many initial snapshots of each table the log
// shows queued.
func assertQueued(t *testing.T, logs string, want map[string]int) {
	t.Helper()
	for table, n := range want {
		got := 0
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, `msg="backfill queued"`) && strings.Contains(line, "table="+table+" ") && strings.Contains(line, "reason=initial") {
				got++
			}
		}
		if got != n {
			t.Errorf("%d initial snapshots of %s queued, want %d:\n%s", got, table, n, tailLines(logs, 30))
		}
	}
}

// valuesList is "(from, 0), ..., (to, 0)".
func valuesList(from, to int) string {
	vals := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		vals = append(vals, fmt.Sprintf("(%d, 0)", i))
	}
	return strings.Join(vals, ",")
}
