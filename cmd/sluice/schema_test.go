package main

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/schemas"
)

// TestSchemaChange: the table's first shape (from the empty one) and each
// ALTER TABLE mid-stream announce the new shape on
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
		events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 7, time.Minute)
		want := []struct {
			op      string
			cols    string
			version int
		}{
			{"schema", "", 1},
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
		if string(events[3].After["note"]) != `"two"` || string(events[4].After["note"]) != `"x"` || string(events[6].After["note"]) != `"three"` {
			t.Errorf("values of note: %s %s %s", events[3].After["note"], events[4].After["note"], events[6].After["note"])
		}
		subject := db.subject("items") + "._schema"
		assertSchemaEvent(t, events[0], subject, 0, "", 1, "id,v")
		assertFirstShape(t, events[0], subject, "id,v", "id")
		assertSchemaEvent(t, events[2], subject, 1, "id,v", 2, "id,v,note")
		assertSchemaEvent(t, events[5], subject, 2, "id,v,note", 3, "id,note")
		table := db.schema + ".items"
		// Shapes are registered with their columns' kinds; those of a
		// sluice before kinds existed have none, which the restart and
		// sluice schema below then read.
		stripKinds(t, e, table)
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		// The versions last across a restart: the same shape keeps version
		// 3 and announces nothing, even registered without kinds.
		stop, _ = e.startRun()
		e.exec(`INSERT INTO items VALUES (4, 'four')`)
		events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 8, time.Minute)
		if last := events[7]; last.Op != "c" || last.SchemaVersion != 3 {
			t.Errorf("after a restart the shape must keep version 3: %s", last.raw)
		}

		// sluice schema prints each version's JSON Schema (the kinds of a
		// shape registered without them are the driver's), and its shape.
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

// stripKinds rewrites a table's registered shapes as a sluice before
// column kinds registered them, checking that each column had its kind.
func stripKinds(t *testing.T, e *env, table string) {
	t.Helper()
	ctx := context.Background()
	nc, _, store, err := openControlStore(ctx, e.cfg, natsClient{}, "strip-kinds")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	keys, err := store.Keys(ctx, schemas.ShapePrefix(e.cfg.Source.Name, table))
	if err != nil || len(keys) == 0 {
		t.Fatalf("shapes of %s: %q, %v", table, keys, err)
	}
	for _, k := range keys {
		b, _, err := store.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var shape map[string]any
		if err := json.Unmarshal(b, &shape); err != nil {
			t.Fatal(err)
		}
		for _, c := range shape["columns"].([]any) {
			col := c.(map[string]any)
			if col["kind"] == nil {
				t.Errorf("%s: column %v was registered without its kind", k, col["name"])
			}
			delete(col, "kind")
		}
		if b, err = json.Marshal(shape); err != nil {
			t.Fatal(err)
		}
		if err := store.Put(ctx, k, b); err != nil {
			t.Fatal(err)
		}
	}
}

// assertFirstShape checks the event that announces a table's first shape:
// a schema-change event on subject from the empty shape (version 0, no
// columns, no key) to version 1 with columns cols (in any order) and key
// key (in key order), under the message id of the table's version 1.
func assertFirstShape(t *testing.T, ev event, subject, cols, key string) {
	t.Helper()
	var body struct {
		Schema struct {
			Old, New struct {
				Version int
				Columns []struct{ Name string }
				Key     []string
			}
		} `json:"schema"`
	}
	if err := json.Unmarshal([]byte(ev.raw), &body); err != nil {
		t.Fatal(err)
	}
	old, shape := body.Schema.Old, body.Schema.New
	var names []string
	for _, c := range shape.Columns {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	want := strings.Split(cols, ",")
	slices.Sort(want)
	id := ev.Source.Name + ":schema:" + ev.Source.Schema + "." + ev.Source.Table + ":1"
	if ev.Op != "schema" || ev.subject != subject || ev.msgID != id || ev.SchemaVersion != 1 ||
		old.Version != 0 || old.Columns == nil || len(old.Columns) != 0 || old.Key == nil || len(old.Key) != 0 ||
		shape.Version != 1 || !slices.Equal(names, want) || strings.Join(shape.Key, ",") != key {
		t.Errorf("first shape on %s (id %s): %s; want on %s (id %s), v0 [] → v1 [%s] key [%s]",
			ev.subject, ev.msgID, ev.raw, subject, id, cols, key)
	}
}
