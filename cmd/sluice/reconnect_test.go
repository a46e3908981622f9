package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// When the database goes away, sluice reconnects with backoff and resumes
// from the last stored position: every change arrives once.
func TestRestartMidStream(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "items")
		e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int)`)
		restartMidStream(t, e, conn.server())
	})
}

// restartable is a database server that can go away and come back.
type restartable interface {
	Halt() error
	Restart(ctx context.Context) error
}

func restartMidStream(t *testing.T, e *env, db restartable) {
	base := e.serveHTTP()
	stop, logs := e.startRun()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sluice log:\n%s", logs)
		}
	})
	for i := range 50 {
		e.exec(fmt.Sprintf("INSERT INTO items VALUES (%d, 0)", i))
	}
	readRows(t, e.natsURL(), e.cfg.Stream.Name, 50, 30*time.Second)

	if err := db.Halt(); err != nil {
		t.Fatal(err)
	}
	// sluice notices: its source no longer has the log open.
	waitHTTP(t, base+"/readyz", 30*time.Second, "unready while the database is down", func(code int, body string) bool {
		return code == 503 && strings.Contains(body, "log is not open")
	})
	if err := db.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := 50; i < 100; i++ {
		e.exec(fmt.Sprintf("INSERT INTO items VALUES (%d, 0)", i))
	}
	e.exec(`UPDATE items SET v = 1`)

	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, 200, 60*time.Second)
	e.waitCheckpointed(time.Minute)
	// The rows and the table's first shape, announced once.
	if n := streamCount(t, e.natsURL(), e.cfg.Stream.Name); n != 1+200 {
		t.Fatalf("stream holds %d messages, want 201", n)
	}
	seen := map[string]bool{}
	for _, ev := range events {
		if seen[ev.msgID] {
			t.Fatalf("message %s twice", ev.msgID)
		}
		seen[ev.msgID] = true
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "source connection lost; reconnecting") {
		t.Errorf("no reconnect logged")
	}
}
