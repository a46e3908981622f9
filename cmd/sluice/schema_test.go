package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// TestSchemaChangePostgres: ALTER TABLE mid-stream announces the new shape
// on <prefix>.<source>.<schema>.<table>._schema before its first change,
// the version increments, lasts across a restart, and sluice schema
// prints each version's JSON Schema.
func TestSchemaChangePostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int)`)
	stop, _ := e.startRun()
	e.exec(`INSERT INTO items VALUES (1, 1)`)
	e.exec(`ALTER TABLE items ADD COLUMN note text`)
	e.exec(`INSERT INTO items VALUES (2, 2, 'two')`)
	e.exec(`ALTER TABLE items DROP COLUMN v`)
	e.exec(`UPDATE items SET note = 'one' WHERE id = 1`)
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 5, time.Minute)
	ops := []string{}
	for _, ev := range events {
		ops = append(ops, ev.Op+":"+string(rune('0'+ev.SchemaVersion)))
	}
	if got := strings.Join(ops, " "); got != "c:1 schema:2 c:2 schema:3 u:3" {
		t.Fatalf("events %s, want c:1 schema:2 c:2 schema:3 u:3", got)
	}
	assertSchemaEvent(t, events[1], "cdc.pg1.public.items._schema", 1, "id,v", 2, "id,v,note")
	assertSchemaEvent(t, events[3], "cdc.pg1.public.items._schema", 2, "id,v,note", 3, "id,note")
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	stop, _ = e.startRun()
	e.exec(`INSERT INTO items VALUES (3, 'three')`)
	events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 6, time.Minute)
	if last := events[5]; last.Op != "c" || last.SchemaVersion != 3 {
		t.Errorf("after a restart the shape must keep version 3: %s", last.raw)
	}
	var out strings.Builder
	if err := printSchema(context.Background(), &out, e.cfg, natsClient{}, "public.items", 0, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"title": "public.items version 3"`, `"note": {`, `"x-sluice-type": "text"`, `"integer"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sluice schema has no %s:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), `"v": {`) {
		t.Errorf("version 3 still has the dropped column v:\n%s", out.String())
	}
	out.Reset()
	if err := printSchema(context.Background(), &out, e.cfg, natsClient{}, "public.items", 3, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"name": "id",
      "type": "int4",
      "key": true,
      "not_null": true`) || strings.Count(out.String(), "not_null") != 1 {
		t.Errorf("the shape must show id NOT NULL and note nullable:\n%s", out.String())
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
