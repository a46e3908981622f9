package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// runErr runs sluice in-process and returns the error it stops with.
func runErr(t *testing.T, cfg sidecar.Config) (error, string) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := sidecar.Run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)), sidecar.Options{})
	if ctx.Err() != nil {
		t.Fatalf("run did not stop with an error within 60s; log:\n%s", logs)
	}
	return err, logs.String()
}

func mentions(t *testing.T, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("want an error, got none")
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not mention %q:\n%v", f, err)
		}
	}
}

func TestUnreachablePostgres(t *testing.T) {
	t.Parallel()
	port := natstest.FreePort(t)
	cfg, err := sidecar.ParseConfig("unreachable.yaml", fmt.Appendf(nil, "source: {name: pg1, dsn: %q}\nnats: {store_dir: %q}\n",
		fmt.Sprintf("postgres://app:s3cret-pw@127.0.0.1:%d/shop", port), t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	err, logs := runErr(t, cfg)
	mentions(t, err, fmt.Sprintf("cannot connect to PostgreSQL at 127.0.0.1:%d", port), "is the server running")
	if strings.Contains(err.Error()+logs, "s3cret-pw") {
		t.Errorf("the password leaked: %v\n%s", err, logs)
	}
}

func TestWALLevelNotLogical(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	e := newEnv(t, pg, "public.t")
	e.exec(`CREATE TABLE t (id int PRIMARY KEY)`)
	err, _ := runErr(t, e.cfg)
	if !errors.Is(err, sources.ErrPrerequisite) {
		t.Errorf("error is not ErrPrerequisite: %v", err)
	}
	mentions(t, err, `wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical", "restart PostgreSQL")
}

func TestTableWithoutPrimaryKey(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.ok", "public.nokey", "public.missing")
	e.exec(`CREATE TABLE ok (id int PRIMARY KEY); CREATE TABLE nokey (a int, b text)`)
	err, _ := runErr(t, e.cfg)
	if !errors.Is(err, sources.ErrNoPrimaryKey) {
		t.Errorf("error is not ErrNoPrimaryKey: %v", err)
	}
	// One error names every problem and its fix.
	mentions(t, err, "public.nokey", "ADD PRIMARY KEY", "REPLICA IDENTITY FULL", "source.keys", "public.missing does not exist")
}

// A row larger than the NATS max payload goes to the dead-letter subject
// with its table, key and size, never its values; the stream goes on, and
// a backfill of the table finishes, its chunk event keeping the row.
func TestRowLargerThanMaxPayload(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.docs")
	e.exec(`CREATE TABLE docs (id int PRIMARY KEY, body text)`)
	e.cfg.NATS.MaxPayload = 4096
	stop, logs := e.startRun()
	e.exec(`INSERT INTO docs VALUES (1, 'small')`)
	e.exec(`INSERT INTO docs VALUES (2, 'canary-' || repeat('x', 10000))`)
	e.exec(`INSERT INTO docs VALUES (3, 'after')`)
	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, 3, 30*time.Second)
	var dlq event
	for _, ev := range events {
		if strings.HasSuffix(ev.subject, "._dlq") {
			dlq = ev
		}
	}
	for _, want := range []string{`"reason":"too_large"`, `"table":"public.docs"`, `"key":{"id":2}`, `"limit":4096`, `"op":"c"`} {
		if !strings.Contains(dlq.raw, want) {
			t.Errorf("dead-letter message lacks %s: %s", want, dlq.raw)
		}
	}
	if strings.Contains(dlq.raw, "canary") {
		t.Errorf("the dead-letter message carries the row's value: %s", dlq.raw)
	}
	if ids := []string{string(events[0].Key["id"]), string(events[2].Key["id"])}; ids[0] != "1" || ids[1] != "3" {
		t.Errorf("events around the oversized row have keys %v, want 1 and 3", ids)
	}

	var out strings.Builder
	if err := requestBackfill(context.Background(), &out, e.cfg, natsClient{}, []string{"public.docs"}, nil, true); err != nil {
		t.Fatalf("backfill with an oversized row: %v\n%s", err, logs)
	}
	all := readEvents(t, e.natsURL(), e.cfg.Stream.Name, int(streamCount(t, e.natsURL(), e.cfg.Stream.Name)), 30*time.Second)
	kept, dlqs := 0, 0
	for _, ev := range all {
		switch {
		case strings.HasSuffix(ev.subject, "._dlq"):
			dlqs++
		case ev.Op == "chunk" && strings.Contains(ev.raw, `"keep":[[2]]`):
			kept++
		}
		if strings.Contains(ev.raw, "canary") {
			t.Errorf("a message carries the oversized value: %.200s", ev.raw)
		}
	}
	if dlqs != 2 || kept != 1 {
		t.Errorf("%d dead letters (want 2: log and backfill), %d chunk events keeping [2] (want 1, on its partition)", dlqs, kept)
	}
	if strings.Contains(logs.String(), "canary") {
		t.Error("the log carries the oversized value")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
