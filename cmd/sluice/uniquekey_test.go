package main

import (
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// A table without a primary key, keyed by a unique index over NOT NULL
// columns, streams and backfills on PostgreSQL, under REPLICA IDENTITY
// USING INDEX and under FULL.
func TestUniqueIndexKeyPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.byidx", "public.byfull")
	e.exec(`CREATE TABLE byidx (code text NOT NULL, region int NOT NULL, v int);
		CREATE UNIQUE INDEX byidx_key ON byidx (region, code);
		ALTER TABLE byidx REPLICA IDENTITY USING INDEX byidx_key;
		CREATE TABLE byfull (code text NOT NULL, region int NOT NULL, v int, note text, UNIQUE (region, code), UNIQUE (note));
		ALTER TABLE byfull REPLICA IDENTITY FULL`)
	out, err := runCheck(t, e)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	assertLists(t, out, "key of public.byidx: unique index byidx_key (region, code), replica identity USING INDEX",
		"key of public.byfull: unique index byfull_region_code_key (region, code), replica identity FULL")
	assertUniqueKeyCapture(t, e, "public.byidx", "public.byfull")
}

// The same on MariaDB, where the binlog carries whole rows.
func TestUniqueIndexKeyMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.byidx")
	e.exec(`CREATE TABLE byidx (code VARCHAR(10) NOT NULL, region INT NOT NULL, v INT, UNIQUE KEY byidx_key (region, code))`)
	out, err := runCheck(t, e)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	assertLists(t, out, "key of shop.byidx: unique index byidx_key (region, code), over NOT NULL columns")
	assertUniqueKeyCapture(t, e, "shop.byidx")
}

// A table with the default replica identity and only a unique index is
// refused: PostgreSQL would log no old key for its updates and deletes.
// The error names the fix, and sluice check shows it.
func TestUniqueIndexDefaultIdentityRefused(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items", "public.loose")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY); CREATE TABLE loose (code text NOT NULL UNIQUE, v int)`)
	err, _ := runErr(t, e.cfg)
	if !errors.Is(err, sources.ErrNoPrimaryKey) {
		t.Errorf("error is not ErrNoPrimaryKey: %v", err)
	}
	mentions(t, err, "public.loose", "replica identity is DEFAULT", `ALTER TABLE "public"."loose" REPLICA IDENTITY USING INDEX "loose_code_key"`)
	out, err := runCheck(t, e)
	if !errors.Is(err, sidecar.ErrBlocked) {
		t.Fatalf("check = %v, want sidecar.ErrBlocked:\n%s", err, out)
	}
	assertLists(t, out, `FAIL  postgres source pg1: table public.loose has no primary key`, "REPLICA IDENTITY USING INDEX", "key of public.items: primary key (id)")
}

// assertUniqueKeyCapture backfills the tables (region int, code text, v
// int) keyed by (region, code) in chunks of two rows, then inserts,
// updates, changes the key of and deletes a row of each: every event's key
// is the index's columns in index order, as is the key of the table's first
// shape, a key change is a delete of the old key and a create of the new
// one, and the backfill reads every row.
func assertUniqueKeyCapture(t *testing.T, e *env, tables ...string) {
	t.Helper()
	rows := [][2]string{{"1", "a"}, {"1", "b"}, {"2", "a"}, {"2", "c"}, {"3", "z"}}
	for _, table := range tables {
		for _, r := range rows {
			e.exec(fmt.Sprintf("INSERT INTO %s (region, code, v) VALUES (%s, '%s', 0)", unqualified(table), r[0], r[1]))
		}
	}
	e.setYAML("backfill: {initial: false}", "backfill: {initial: false, chunk_size: 2}")
	e.backfill = tables
	stop, logs := e.startRun()
	e.waitBackfills(len(tables), 2*time.Minute, logs)
	for _, table := range tables {
		tn := unqualified(table)
		e.exec(fmt.Sprintf("INSERT INTO %s (region, code, v) VALUES (4, 'n', 0)", tn))
		e.exec(fmt.Sprintf("UPDATE %s SET v = 1 WHERE region = 4 AND code = 'n'", tn))
		e.exec(fmt.Sprintf("UPDATE %s SET code = 'm' WHERE region = 4 AND code = 'n'", tn))
		e.exec(fmt.Sprintf("DELETE FROM %s WHERE region = 4 AND code = 'm'", tn))
	}
	events := readUntil(t, e, func(evs []event) bool {
		deleted := 0
		for _, ev := range evs {
			if ev.Op == "d" && string(ev.Key["code"]) == `"m"` {
				deleted++
			}
		}
		return deleted == len(tables)
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	assertAnnounced(t, events)
	for _, table := range tables {
		var reads, changes []string
		for _, ev := range events {
			if ev.Source.Table != unqualified(table) || ev.Op == "chunk" {
				continue
			}
			if ev.Op == "schema" {
				cols := map[string]string{"byfull": "code,region,v,note"}[unqualified(table)]
				if cols == "" {
					cols = "code,region,v"
				}
				assertFirstShape(t, ev, "cdc."+e.cfg.Source.Name+"."+table+"._schema", cols, "region,code")
				continue
			}
			at := strings.Index(ev.raw, `"key":`)
			end := strings.Index(ev.raw[at:], "}")
			key := ev.raw[at+len(`"key":`) : at+end+1]
			if ev.Op == "r" {
				reads = append(reads, key)
			} else {
				changes = append(changes, ev.Op+" "+key)
			}
		}
		// A chunk's first row is the previous chunk's last: read twice.
		slices.Sort(reads)
		reads = slices.Compact(reads)
		var wantReads []string
		for _, r := range rows {
			wantReads = append(wantReads, fmt.Sprintf(`{"region":%s,"code":"%s"}`, r[0], r[1]))
		}
		if !slices.Equal(reads, wantReads) {
			t.Errorf("%s: backfill read keys\n%s\nwant\n%s", table, strings.Join(reads, "\n"), strings.Join(wantReads, "\n"))
		}
		wantChanges := []string{
			`c {"region":4,"code":"n"}`,
			`u {"region":4,"code":"n"}`,
			`d {"region":4,"code":"n"}`, // the key changed: the old key goes...
			`c {"region":4,"code":"m"}`, // ...and the new one comes
			`d {"region":4,"code":"m"}`,
		}
		if !slices.Equal(changes, wantChanges) {
			t.Errorf("%s: changes\n%s\nwant\n%s", table, strings.Join(changes, "\n"), strings.Join(wantChanges, "\n"))
		}
	}
}

func unqualified(table string) string {
	_, name, _ := strings.Cut(table, ".")
	return name
}

// readUntil reads the whole stream until done says it has what the test
// waits for, or fails the test after a minute.
func readUntil(t *testing.T, e *env, done func([]event) bool) []event {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		n := streamCount(t, e.natsURL(), e.cfg.Stream.Name)
		events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, int(n), 30*time.Second)
		if done(events) {
			return events
		}
		if time.Now().After(deadline) {
			t.Fatalf("the awaited events did not come within a minute; %d events", len(events))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
