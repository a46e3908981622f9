package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

const typesSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
	id int PRIMARY KEY,
	i2 smallint, i4 int, i8 bigint,
	num numeric(40,20), r real, d double precision,
	t text, vc varchar(10), b bool,
	dt date, tm time, ts timestamp, tstz timestamptz, iv interval,
	u uuid, j json, jb jsonb, by bytea,
	iarr int[], tarr text[], m mood, marr mood[],
	nul text);
CREATE TABLE orders (region text, id int, qty int, note text, PRIMARY KEY (region, id));`

const typesRow = `INSERT INTO all_types VALUES (1,
	-32768, 2147483647, 9223372036854775807,
	'12345678901234567890.12345678901234567890', 1.5, -2.5e100,
	'tab	"quote" \ back', 'varchar', true,
	'2024-02-29', '13:45:06.789', '2024-02-29 13:45:06.123456', '2024-02-29 13:45:06.5+02', 'P1Y2M3DT4H5M6.5S',
	'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": [1, 2]}', '{"b": {"c": null}}', '\x00ff10',
	'{1,NULL,3}', '{"a b","c,d",NULL}', 'happy', '{sad,ok}',
	NULL)`

// The JSON each column of typesRow must become (DESIGN.md "The event").
var typesWant = map[string]string{
	"id":   `1`,
	"i2":   `-32768`,
	"i4":   `2147483647`,
	"i8":   `9223372036854775807`,
	"num":  `"12345678901234567890.12345678901234567890"`,
	"r":    `1.5`,
	"d":    `-2.5e+100`,
	"t":    `"tab\t\"quote\" \\ back"`,
	"vc":   `"varchar"`,
	"b":    `true`,
	"dt":   `"2024-02-29"`,
	"tm":   `"13:45:06.789"`,
	"ts":   `"2024-02-29T13:45:06.123456Z"`,
	"tstz": `"2024-02-29T11:45:06.5Z"`,
	"iv":   `"P1Y2M3DT4H5M6.5S"`,
	"u":    `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`,
	"j":    `{"a": [1, 2]}`,
	"jb":   `{"b": {"c": null}}`,
	"by":   `"AP8Q"`,
	"iarr": `[1,null,3]`,
	"tarr": `["a b","c,d",null]`,
	"m":    `"happy"`,
	"marr": `["sad","ok"]`,
	"nul":  `null`,
}

// TestEndToEnd: every value of every type, inserts, updates, a key
// change, deletes and truncates arrive once each, in per-key order, on
// their key's partition, each table's after the event announcing its
// first shape, as sluice tail prints them too.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "all_types", "orders")
		for _, ddl := range db.typesDDL {
			e.exec(ddl)
		}
		stop, logs := e.startRun()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("sluice log:\n%s", logs)
			}
		})

		e.exec(db.typesRow)
		e.exec(`INSERT INTO all_types (id) VALUES (2)`)
		var values []string
		for i := range 20 {
			values = append(values, fmt.Sprintf("('%s', %d, %d, 'n%d')", []string{"eu", "us"}[i%2], i/2, i, i))
		}
		e.exec(`INSERT INTO orders VALUES ` + strings.Join(values, ","))
		tx(t, conn, `UPDATE orders SET qty = qty + 100`, `UPDATE all_types SET `+db.textColumn+` = 'changed' WHERE id = 1`)
		e.exec(`UPDATE orders SET id = 100 WHERE region = 'eu' AND id = 1`)
		e.exec(`DELETE FROM all_types WHERE id = 2`)
		e.exec(`TRUNCATE orders`)

		// Each table's first shape, and its rows.
		const want = 2 + 2 + 20 + 21 + 2 + 1 + 4
		events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, want, 60*time.Second)

		// Nothing more may arrive: no duplicates, no stray events. Once the
		// checkpoint covers the stream, any would be in it.
		e.waitCheckpointed(time.Minute)
		if n := streamCount(t, e.natsURL(), e.cfg.Stream.Name); n != want {
			t.Fatalf("stream holds %d messages, want exactly %d", n, want)
		}

		// sluice tail prints the same events, one JSON object per line.
		var out strings.Builder
		tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer tcancel()
		if err := tail(tctx, &out, natsClient{URL: e.natsURL()}, "cdc.>", true, want); err != nil {
			t.Fatalf("tail: %v", err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != want {
			t.Fatalf("tail printed %d lines, want %d", len(lines), want)
		}
		for i, l := range lines {
			if l != events[i].raw {
				t.Fatalf("tail line %d = %s, want %s", i, l, events[i].raw)
			}
		}
		out.Reset()
		// Its _schema subject is one of the table's too.
		if err := tail(tctx, &out, natsClient{URL: e.natsURL()}, db.subject("all_types")+".*", true, 4); err != nil {
			t.Fatalf("tail of one table: %v", err)
		}
		lines = strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], `{"op":"schema",`) || strings.Contains(out.String(), `"table":"orders"`) ||
			strings.Count(out.String(), `"source":{"name":"`+db.source+`","kind":"`+db.kind+`","db":"shop","schema":"`+db.schema+`","table":"all_types"`) != 4 {
			t.Fatalf("tail of all_types printed, want its first shape and 3 of its events:\n%s", out.String())
		}
		if err := stop(); err != nil {
			t.Fatalf("run: %v", err)
		}

		// Each table's first shape is announced before its first row:
		// its columns and key, from nothing.
		assertAnnounced(t, events)
		assertFirstShape(t, events[0], db.subject("all_types")+"._schema",
			strings.Join(slices.Sorted(maps.Keys(db.typesWant)), ","), "id")
		assertFirstShape(t, events[3], db.subject("orders")+"._schema", "region,id,qty,note", "region,id")
		ids := map[string]bool{}
		var rows []event
		for _, ev := range events {
			if ids[ev.msgID] {
				t.Errorf("message id %s delivered twice", ev.msgID)
			}
			ids[ev.msgID] = true
			if ev.Op != "schema" {
				rows = append(rows, ev)
			}
		}
		if len(rows) != want-2 {
			t.Fatalf("%d row events, want %d", len(rows), want-2)
		}

		// Every value of every type, exactly.
		first := rows[0]
		if first.Op != "c" || first.Source.Table != "all_types" {
			t.Fatalf("first event = %s", first.raw)
		}
		for col, w := range db.typesWant {
			if got := string(first.After[col]); got != w {
				t.Errorf("column %s = %s, want %s", col, got, w)
			}
		}
		if len(first.After) != len(db.typesWant) {
			t.Errorf("after has %d columns, want %d: %s", len(first.After), len(db.typesWant), first.raw)
		}
		if first.Before != nil || string(first.Key["id"]) != "1" {
			t.Errorf("insert: before %v key %v", first.Before, first.Key)
		}
		s := first.Source
		if s.Name != db.source || s.Kind != db.kind || s.DB != "shop" || s.Schema != db.schema || s.Pos == "" || s.TxID == 0 || s.Snapshot ||
			time.Since(time.UnixMilli(s.TsMs)) > time.Minute || first.SchemaVersion != 1 || first.TsMs < s.TsMs {
			t.Errorf("source block: %s", first.raw)
		}
		for col, v := range rows[1].After {
			if col != "id" && string(v) != "null" {
				t.Errorf("row of NULLs: column %s = %s", col, v)
			}
		}

		byKey := map[string][]string{} // ops per key, in stream order
		for _, ev := range rows {
			if !strings.HasPrefix(ev.msgID, db.source+":"+ev.Source.Pos+":") {
				t.Errorf("message id %s does not carry the position %s", ev.msgID, ev.Source.Pos)
			}
			if ev.Op == "t" {
				continue
			}
			key := canonicalKey(t, ev)
			if want := fmt.Sprintf("%s.%d", db.subject(ev.Source.Table), sink.Partition([]byte(key), 4)); ev.subject != want {
				t.Errorf("event for key %s on %s, want %s", key, ev.subject, want)
			}
			byKey[ev.Source.Table+key] = append(byKey[ev.Source.Table+key], ev.Op)
		}

		// Per-key order, with the key change split into delete + create.
		checks := map[string][]string{
			`all_types[1]`:     {"c", "u"},
			`all_types[2]`:     {"c", "d"},
			`orders["eu",0]`:   {"c", "u"},
			`orders["eu",1]`:   {"c", "u", "d"},
			`orders["eu",100]`: {"c"},
			`orders["us",9]`:   {"c", "u"},
		}
		for k, w := range checks {
			if got := byKey[k]; !slices.Equal(got, w) {
				t.Errorf("ops of %s = %v, want %v", k, got, w)
			}
		}
		var upd event
		for _, ev := range rows {
			if ev.Op == "u" && ev.Source.Table == "all_types" {
				upd = ev
			}
		}
		if string(upd.After[db.textColumn]) != `"changed"` {
			t.Errorf("update: %s", upd.raw)
		}
		if db.fullBefore && string(upd.Before[db.textColumn]) != db.typesText || !db.fullBefore && upd.Before != nil {
			t.Errorf("update's before image (full: %t): %s", db.fullBefore, upd.raw)
		}
		var truncs []string
		for _, ev := range rows[len(rows)-4:] {
			if ev.Op != "t" || ev.Key != nil {
				t.Errorf("want truncate events last, got %s", ev.raw)
			}
			truncs = append(truncs, ev.subject)
		}
		slices.Sort(truncs)
		o := db.subject("orders")
		if !slices.Equal(truncs, []string{o + ".0", o + ".1", o + ".2", o + ".3"}) {
			t.Errorf("truncate subjects %v, want one per partition", truncs)
		}
		if !strings.Contains(logs.String(), "stopped") {
			t.Errorf("no clean stop logged:\n%s", logs)
		}
	})
}

// canonicalKey rebuilds the canonical key the way a consumer would: the
// key's values in key-column order.
func canonicalKey(t *testing.T, ev event) string {
	t.Helper()
	order := map[string][]string{"all_types": {"id"}, "orders": {"region", "id"}}[ev.Source.Table]
	var vals []sources.Value
	for _, c := range order {
		vals = append(vals, sources.Value(ev.Key[c]))
	}
	return string(sink.AppendCanonicalKey(nil, vals))
}
