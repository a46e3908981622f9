package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// source.tables patterns and source.exclude resolve at start: public.*
// takes in every table of public with a key, less the excluded ones, and
// not the signal table nor another schema's tables; sluice check lists
// them and says whether tables created later can join the publication.
func TestTablePatternsPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.*")
	e.setYAML("tables: [public.*]}", "tables: [public.*], exclude: [public.secret_*]}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int);
		CREATE TABLE orders_a (id int PRIMARY KEY, v int);
		CREATE TABLE secret_plans (id int PRIMARY KEY, v int);
		CREATE TABLE nokey (id int, v int);
		CREATE SCHEMA app; CREATE TABLE app.t (id int PRIMARY KEY, v int)`)
	out, err := runCheck(t, e)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	assertLists(t, out, "key of public.items: primary key (id)", "key of public.orders_a: primary key (id)",
		"source.tables resolve to: public.items, public.orders_a\n", "ok    tables created later: ")
	for _, not := range []string{"secret_plans", "nokey", "app.t", "sluice_signal"} {
		if strings.Contains(out, "key of public."+not) || strings.Contains(out, "key of "+not) {
			t.Errorf("sluice check lists %s:\n%s", not, out)
		}
	}
	patternsCaptureTest(t, e, "public")
}

func TestTablePatternsMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.*")
	e.setYAML("tables: [shop.*]}", "tables: [shop.*], exclude: [shop.secret_*]}")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT)`)
	e.exec(`CREATE TABLE orders_a (id INT PRIMARY KEY, v INT)`)
	e.exec(`CREATE TABLE secret_plans (id INT PRIMARY KEY, v INT)`)
	e.exec(`CREATE TABLE nokey (id INT, v INT)`)
	e.exec(`CREATE DATABASE app`)
	e.exec(`CREATE TABLE app.t (id INT PRIMARY KEY, v INT)`)
	out, err := runCheck(t, e)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	assertLists(t, out, "key of shop.items: primary key (id)", "key of shop.orders_a: primary key (id)",
		"source.tables resolve to: shop.items, shop.orders_a\n")
	patternsCaptureTest(t, e, "shop")
}

// patternsCaptureTest runs sluice on tables items, orders_a (captured),
// secret_plans (excluded), nokey (no key) and app.t (another schema):
// only the first two have events.
func patternsCaptureTest(t *testing.T, e *env, schema string) {
	t.Helper()
	stop, logs := e.startRun()
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	if !strings.Contains(logs.String(), "tables="+schema+".items,"+schema+".orders_a ") {
		t.Errorf("sluice does not capture exactly items and orders_a:\n%s", tailLines(logs.String(), 20))
	}
	if !strings.Contains(logs.String(), "tables without a usable key are not captured") || !strings.Contains(logs.String(), "tables="+schema+".nokey") {
		t.Errorf("the table without a key matched by the pattern is not named in a warning:\n%s", tailLines(logs.String(), 20))
	}
	// In log order: an excluded table's event would come first.
	for _, sql := range []string{"INSERT INTO secret_plans VALUES (1, 1)", "INSERT INTO nokey VALUES (1, 1)", "INSERT INTO app.t VALUES (1, 1)",
		"INSERT INTO items VALUES (1, 1)", "INSERT INTO orders_a VALUES (1, 1)"} {
		e.exec(sql)
	}
	events := readRows(t, e.natsURL(), e.cfg.Stream.Name, 2, time.Minute)
	if events[0].Source.Table != "items" || events[1].Source.Table != "orders_a" {
		t.Errorf("events of %s and %s, want items and orders_a", events[0].Source.Table, events[1].Source.Table)
	}
}

// TestTableJoins: a table created while sluice runs that schema.* matches arrives with
// its rows (initial snapshot) and its changes, announced by a _schema
// event before its first row; an excluded one created meanwhile has no
// events; a dropped table is logged.
func TestTableJoins(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "*")
		s := db.schema
		e.setYAML("tables: ["+s+".*]}", "tables: ["+s+".*], exclude: ["+s+".secret_*], heartbeat: 1s}")
		tableJoinsTest(t, e, conn, s)
	})
}

func tableJoinsTest(t *testing.T, e *env, db crashDB, schema string) {
	const rows = 1000
	e.setYAML("backfill: {initial: false}", "backfill: {chunk_size: 100}")
	e.exec(`CREATE TABLE seed (id INT PRIMARY KEY, v INT NOT NULL)`)
	stop, logs := e.startRun()
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	e.waitBackfills(1, time.Minute, logs) // seed's initial snapshot
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL)`)
	e.exec(`INSERT INTO items VALUES ` + valuesList(1, rows))
	e.exec(`CREATE TABLE secret_plans (id INT PRIMARY KEY, v INT NOT NULL)`)
	e.exec(`INSERT INTO secret_plans VALUES ` + valuesList(1, 10))
	var next atomic.Int64
	next.Store(rows)
	stopWriter := startWriter(t, 1, 2*time.Millisecond, func(rng *rand.Rand) error {
		id := next.Add(1)
		return db.tx([]string{
			fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", 1+rng.IntN(rows)),
			fmt.Sprintf("INSERT INTO items VALUES (%d, 0)", id),
			fmt.Sprintf("DELETE FROM items WHERE id = %d", 1+rng.IntN(rows)),
			fmt.Sprintf("UPDATE secret_plans SET v = v + 1 WHERE id = %d", 1+rng.IntN(10)),
		})
	})
	e.waitBackfills(2, 2*time.Minute, logs) // and items'
	stopWriter()
	events := assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: e.cfg.Source.Name, Schema: schema, Table: "items"}, db.state)
	announced := false
	for _, ev := range events {
		switch {
		case ev.Source.Table == "secret_plans" || strings.Contains(ev.subject, ".secret_plans."):
			t.Fatalf("an event of the excluded table: %s", ev.raw)
		case ev.Source.Table != "items":
		case ev.Op == "schema":
			announced = true
			if !strings.HasSuffix(ev.subject, "."+schema+".items._schema") || !strings.Contains(ev.raw, `"old":{"source"`) {
				t.Errorf("the announcement of items: %s %s", ev.subject, ev.raw)
			}
		case !announced:
			t.Fatalf("an event of items before its _schema event: %s", ev.raw)
		}
	}
	if !announced {
		t.Fatal("no _schema event for items")
	}
	assertQueued(t, logs.String(), map[string]int{schema + ".items": 1, schema + ".secret_plans": 0})

	e.exec(`DROP TABLE seed`)
	deadline := time.Now().Add(time.Minute)
	for !logged(logs.String(), `msg="table dropped: no longer captured"`, "table="+schema+".seed") {
		if time.Now().After(deadline) {
			t.Fatalf("the dropped table is not logged:\n%s", tailLines(logs.String(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logged tells whether one line of logs holds every fragment.
func logged(logs string, fragments ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, f := range fragments {
			all = all && strings.Contains(line, f)
		}
		if all {
			return true
		}
	}
	return false
}

// TestTableJoinsHostileName: table names from the catalog are hostile
// input; anyone who may create a table in a matched schema chooses them.
// A name that is SQL and cannot be a subject token is left out with a
// warning instead of wedging the stream (before: its _schema event was
// refused by NATS and retried forever); a name with a double quote joins
// the publication quoted and its row arrives; the table the first name
// would drop still exists and its changes keep flowing.
func TestTableJoinsHostileName(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.*")
	e.setYAML("tables: [public.*]}", "tables: [public.*], heartbeat: 1s}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	stop, logs := e.startRun()
	e.exec(`CREATE TABLE "x""; DROP TABLE items; --" (id int PRIMARY KEY)`)
	e.exec(`INSERT INTO "x""; DROP TABLE items; --" VALUES (1)`)
	e.exec(`CREATE TABLE "q""uote" (id int PRIMARY KEY)`)
	e.waitLog(logs, `msg="table created: captured" source=pg1 table="public.q\"uote"`, time.Minute)
	e.waitLog(logs, "cannot be a NATS subject token", time.Minute)
	e.exec(`INSERT INTO "q""uote" VALUES (7)`)
	e.exec(`INSERT INTO items VALUES (8)`)
	got := map[string]bool{}
	// The quoted table's row and the items row, each after its table's
	// first shape (readRows checks).
	for _, ev := range readRows(t, e.natsURL(), e.cfg.Stream.Name, 2, time.Minute) {
		got[ev.Source.Table+"/"+string(ev.Key["id"])] = true
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !got[`q"uote/7`] || !got["items/8"] {
		t.Fatalf("want the quoted table's row and the items row after the hostile name; got %v\n%s", got, tailLines(logs.String(), 20))
	}
	var n int
	if err := pgConn(t, pg).QueryRow(context.Background(), `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("table items: %d rows, %v", n, err)
	}
}
