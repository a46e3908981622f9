package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// source.tables patterns and source.exclude resolve at start: public.*
// takes in every table of public with a key, less the excluded ones, and
// not the signal table nor another schema's tables; sluice check lists
// them and says whether tables created later can join the publication.
func TestTablePatternsPostgres(t *testing.T) {
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
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 2, time.Minute)
	if events[0].Source.Table != "items" || events[1].Source.Table != "orders_a" {
		t.Errorf("events of %s and %s, want items and orders_a", events[0].Source.Table, events[1].Source.Table)
	}
}
