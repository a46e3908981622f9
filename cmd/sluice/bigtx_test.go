package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// TestBigTransactionCrash kills sluice with SIGKILL while it publishes one
// 100,000-row transaction. No checkpoint can fall inside a transaction, so
// the restart replays all of it and must publish exactly the rows the
// stream lacks: every row once, none twice, with a duplicate window too
// short to help.
func TestBigTransactionCrash(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and kills the binary: skipped in -short")
	}
	const rows = 100_000
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text)`)
	e.setYAML("replicas: 1}", "replicas: 1, duplicate_window: 100ms}")
	base := e.serveHTTP()
	bin := buildSluice(t)
	logPath := filepath.Join(e.dir, "sluice.log")
	p := startProc(t, bin, e.cfgYML, logPath)
	waitReady(t, base, 60*time.Second)

	e.exec(`INSERT INTO items SELECT g, 0, 'row ' || g FROM generate_series(1, ` + strconv.Itoa(rows) + `) g`)
	const stream = "SLUICE_PG1"
	deadline := time.Now().Add(2 * time.Minute)
	for streamCount(t, e.natsURL(), stream) < rows/4 {
		if time.Now().After(deadline) {
			t.Fatal("sluice did not publish a quarter of the transaction within 2m")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	p = startProc(t, bin, e.cfgYML, logPath)
	waitReady(t, base, 60*time.Second)
	events := readRows(t, e.natsURL(), stream, rows, 3*time.Minute)
	// Once the checkpoint covers the stream, the replay is over: whatever
	// it repeated is in the stream. The table's first shape is announced
	// once, ahead of the rows.
	e.waitCheckpointed(time.Minute)
	if n := streamCount(t, e.natsURL(), stream); n != 1+rows {
		t.Fatalf("stream holds %d messages for a %d-row transaction and the table's first shape", n, rows)
	}
	seen := make(map[string]bool, rows)
	ids := make(map[string]bool, rows)
	for _, ev := range events {
		id := string(ev.After["id"])
		if ev.Op != "c" || seen[id] || ids[ev.msgID] {
			t.Fatalf("event %s (msg id %s) is not a first create: delivered twice?", ev.raw, ev.msgID)
		}
		seen[id], ids[ev.msgID] = true, true
	}
	for i := 1; i <= rows; i++ {
		if !seen[strconv.Itoa(i)] {
			t.Fatalf("row %d missing", i)
		}
	}
	b, _ := os.ReadFile(logPath)
	m := regexp.MustCompile(`stored_after_checkpoint=(\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("the restart did not skip what was stored, so the test proved nothing; log:\n%s", b)
	}
	skipped, _ := strconv.Atoi(string(m[1]))
	t.Logf("killed after %d of %d rows were stored; the restart skipped them and published the rest", skipped, rows)
	if skipped < rows/4 || skipped >= rows {
		t.Fatalf("restart skipped %d stored messages, want between %d and %d", skipped, rows/4, rows-1)
	}
}
