package main

import (
	"context"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// TestStoreFull: the event streams may take nats.max_store bytes; a
// ballast stream takes most of it. Rows written past the limit are not
// lost: sluice waits with its position kept, /readyz says why and
// sluice_store_full is 1; once the ballast is deleted sluice resumes by
// itself and the stream equals the table.
func TestStoreFull(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	e.setYAML(`store_dir: `, `max_store: 262144, store_dir: `)
	e.setYAML("replicas: 1}", "replicas: 1}\nhttp: {listen: \""+addr+"\"}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, pad text)`)

	// The ballast, in the events account, before sluice starts.
	srv, err := sink.StartServer(sidecar.ServerConfig(e.cfg))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := srv.Connect("ballast")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ballast, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BALLAST", Subjects: []string{"ballast.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for range 180 {
		if _, err := js.Publish(ctx, "ballast.x", make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	info, _ := ballast.Info(ctx)
	t.Logf("ballast: %d bytes of the 262144", info.State.Bytes)
	nc.Close()
	srv.Shutdown()

	stop, logs := e.startRun()
	base := "http://" + addr
	pad := strings.Repeat("x", 500)
	next := 1
	deadline := time.Now().Add(time.Minute)
	for {
		e.exec(fmt.Sprintf("INSERT INTO items SELECT g, 0, '%s' FROM generate_series(%d, %d) g", pad, next, next+19))
		next += 20
		if code, body := httpGet(t, base+"/readyz"); code == 503 && strings.Contains(body, "store is full") {
			t.Logf("/readyz: %s", strings.TrimSpace(body))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store never filled (%d rows):\n%s", next-1, tailLines(logs.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	scrape := waitHTTP(t, base+"/metrics", 10*time.Second, "scrape", func(code int, _ string) bool { return code == 200 })
	if !strings.Contains(scrape, `sluice_store_full{source="pg1"} 1`) {
		t.Errorf("sluice_store_full is not 1 while the store is full")
	}
	// Rows keep coming while the store is full: the database keeps them.
	for range 5 {
		e.exec(fmt.Sprintf("INSERT INTO items SELECT g, 1, 'late' FROM generate_series(%d, %d) g", next, next+9))
		next += 10
	}
	select {
	case <-e.finished:
		t.Fatalf("sluice stopped on a full store:\n%s", tailLines(logs.String(), 20))
	default:
	}

	if err := e.eventsAdmin().DeleteStream(ctx, "BALLAST"); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, base+"/readyz", time.Minute, "ready once the ballast is gone", func(code int, _ string) bool { return code == 200 })
	// Fewer events than rows would fail: every row is in the stream,
	// after the table's first shape.
	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, next-1, time.Minute)
	stored := streamCount(t, e.natsURL(), e.cfg.Stream.Name)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, ev := range events {
		if ev.Op != "c" || seen[string(ev.Key["id"])] {
			t.Fatalf("want each of %d rows created once; got %s", next-1, ev.raw)
		}
		seen[string(ev.Key["id"])] = true
	}
	if stored != uint64(1+next-1) {
		t.Errorf("stream holds %d messages for %d rows and the table's first shape", stored, next-1)
	}
	if !strings.Contains(logs.String(), "JetStream store full") || !strings.Contains(logs.String(), "publishing resumed") {
		t.Errorf("the log does not say the store was full and then had room:\n%s", tailLines(logs.String(), 20))
	}
	if n := strings.Count(logs.String(), "JetStream store full"); n > 3 {
		t.Errorf("%d store-full warnings: want about one a minute", n)
	}
}
