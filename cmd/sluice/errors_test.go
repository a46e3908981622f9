package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// runErr runs sluice in-process and returns the error it stops with.
func runErr(t *testing.T, cfg Config) (error, string) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := run(ctx, cfg, slog.New(slog.NewTextHandler(logs, nil)))
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
	port := natstest.FreePort(t)
	cfg := defaults()
	cfg.Source.Name = "pg1"
	cfg.Source.DSN = fmt.Sprintf("postgres://app:s3cret-pw@127.0.0.1:%d/shop", port)
	cfg.NATS.StoreDir = t.TempDir()
	cfg.fill()
	err, logs := runErr(t, cfg)
	mentions(t, err, fmt.Sprintf("cannot connect to PostgreSQL at 127.0.0.1:%d", port), "is the server running")
	if strings.Contains(err.Error()+logs, "s3cret-pw") {
		t.Errorf("the password leaked: %v\n%s", err, logs)
	}
}

func TestWALLevelNotLogical(t *testing.T) {
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

// A row larger than the NATS max payload stops sluice with an error naming
// it; nothing is skipped, so a restart with a higher limit delivers it.
func TestRowLargerThanMaxPayload(t *testing.T) {
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.docs")
	e.exec(`CREATE TABLE docs (id int PRIMARY KEY, body text)`)
	e.cfg.NATS.MaxPayload = 4096
	stop, logs := e.startRun()
	e.exec(`INSERT INTO docs VALUES (1, 'small')`)
	e.exec(`INSERT INTO docs VALUES (2, repeat('x', 10000))`)
	e.exec(`INSERT INTO docs VALUES (3, 'after')`)
	select {
	case <-e.finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("run did not stop on the oversized row; log:\n%s", logs)
	}
	err := stop()
	if !errors.Is(err, sink.ErrTooLarge) {
		t.Fatalf("run = %v, want ErrTooLarge; log:\n%s", err, logs)
	}
	mentions(t, err, "public.docs", "key [2]", "nats.max_payload", "4096")

	e.cfg.NATS.MaxPayload = 1 << 20
	stop, _ = e.startRun()
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 3, 30*time.Second)
	for i, ev := range events {
		if string(ev.Key["id"]) != fmt.Sprint(i+1) {
			t.Errorf("event %d has key %s, want %d", i, ev.Key["id"], i+1)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
