package main

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSchemaChange: ALTER TABLE mid-stream announces the new shape on
// <prefix>.<source>.<schema>.<table>._schema before its first change; every
// event carries the columns the table had at its point of the log and its
// shape's version, which increments, lasts across a restart; sluice schema
// prints each version's JSON Schema and shape.
func TestSchemaChange(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, _ := db.start(t, "items")
		e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT)`)
		stop, logs := e.startRun()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("sluice log:\n%s", logs)
			}
		})
		e.exec(`INSERT INTO items VALUES (1, 1)`)
		e.exec(`ALTER TABLE items ADD COLUMN note VARCHAR(10) DEFAULT 'x'`)
		e.exec(`INSERT INTO items VALUES (2, 2, 'two')`)
		e.exec(`UPDATE items SET v = 11 WHERE id = 1`)
		e.exec(`ALTER TABLE items DROP COLUMN v`)
		e.exec(`INSERT INTO items VALUES (3, 'three')`)
		events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 6, time.Minute)
		want := []struct {
			op      string
			cols    string
			version int
		}{
			{"c", "id,v", 1},
			{"schema", "", 2},
			{"c", "id,note,v", 2},
			{"u", "id,note,v", 2},
			{"schema", "", 3},
			{"c", "id,note", 3},
		}
		for i, w := range want {
			ev := events[i]
			cols := slices.Sorted(maps.Keys(ev.After))
			if ev.Op != w.op || strings.Join(cols, ",") != w.cols || ev.SchemaVersion != w.version {
				t.Errorf("event %d = %s %v v%d, want %s [%s] v%d: %s", i, ev.Op, cols, ev.SchemaVersion, w.op, w.cols, w.version, ev.raw)
			}
		}
		if string(events[2].After["note"]) != `"two"` || string(events[3].After["note"]) != `"x"` || string(events[5].After["note"]) != `"three"` {
			t.Errorf("values of note: %s %s %s", events[2].After["note"], events[3].After["note"], events[5].After["note"])
		}
		subject := db.subject("items") + "._schema"
		assertSchemaEvent(t, events[1], subject, 1, "id,v", 2, "id,v,note")
		assertSchemaEvent(t, events[4], subject, 2, "id,v,note", 3, "id,note")
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		// The versions last across a restart: the same shape keeps version
		// 3 and announces nothing.
		stop, _ = e.startRun()
		e.exec(`INSERT INTO items VALUES (4, 'four')`)
		events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 7, time.Minute)
		if last := events[6]; last.Op != "c" || last.SchemaVersion != 3 {
			t.Errorf("after a restart the shape must keep version 3: %s", last.raw)
		}

		// sluice schema prints each version's JSON Schema, and its shape.
		table := db.schema + ".items"
		var out strings.Builder
		if err := printSchema(context.Background(), &out, e.cfg, natsClient{}, table, 0, false); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"title": "` + table + ` version 3"`, `"note": {`, `"x-sluice-type": "`, `"integer"`} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("sluice schema has no %s:\n%s", want, out.String())
			}
		}
		if strings.Contains(out.String(), `"v": {`) {
			t.Errorf("version 3 still has the dropped column v:\n%s", out.String())
		}
		out.Reset()
		if err := printSchema(context.Background(), &out, e.cfg, natsClient{}, table, 2, false); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"title": "` + table + ` version 2"`, `"v": {`, `"note": {`, `"required": [`} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("sluice schema --version 2 has no %s:\n%s", want, out.String())
			}
		}
		out.Reset()
		if err := printSchema(context.Background(), &out, e.cfg, natsClient{}, table, 3, true); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), `"name": "id",
      "type": "`+db.intType+`",
      "key": true,
      "not_null": true`) || strings.Count(out.String(), "not_null") != 1 {
			t.Errorf("the shape must show id NOT NULL and note nullable:\n%s", out.String())
		}
		mentions(t, printSchema(context.Background(), &out, e.cfg, natsClient{}, table, 9, false), "versions 1 to 3")
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
