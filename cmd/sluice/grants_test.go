package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// The SSN of a table sluice does not capture: the shipped grants must not
// let sluice's login read it.
const grantsCanary = "666-12-3456"

// TestShippedGrantsPostgres applies deploy/database/postgres-grants.sql as
// shipped and runs sluice with that login: it streams, backfills and passes
// sluice check, is no superuser, and cannot read a table it does not
// capture (the superuser can: the probe works).
func TestShippedGrantsPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t, pgtest.Options{Password: pgAdminPassword})
	e := newEnv(t, pg, "public.orders", "public.customers")
	e.exec(`CREATE TABLE orders (id int PRIMARY KEY, total int)`)
	e.exec(`CREATE TABLE customers (id int PRIMARY KEY, name text)`)
	e.exec(`CREATE TABLE secrets (id int PRIMARY KEY, ssn text)`)
	e.exec(`INSERT INTO secrets VALUES (1, $1)`, grantsCanary)
	e.exec(`INSERT INTO customers VALUES (1, 'ann')`)
	e.exec(shipped(t, "postgres-grants.sql"))
	e.cfg.Source.DSN = fmt.Sprintf("postgres://sluice:change-me@127.0.0.1:%d/shop?sslmode=disable", pg.Port())

	ctx := context.Background()
	login, err := pgx.Connect(ctx, e.cfg.Source.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer login.Close(ctx)
	var super bool
	if err := login.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Fatalf("the shipped login is a superuser (%v)", err)
	}
	var ssn string
	if err := login.QueryRow(ctx, `SELECT ssn FROM secrets`).Scan(&ssn); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("the shipped login read an uncaptured table: %q, %v", ssn, err)
	}
	if err := pgConn(t, pg).QueryRow(ctx, `SELECT ssn FROM secrets`).Scan(&ssn); err != nil || ssn != grantsCanary {
		t.Fatalf("canary: the superuser cannot read the probe's table: %q, %v", ssn, err)
	}
	grantsRun(t, e, "public")
}

// TestShippedGrantsMySQL: the same with deploy/database/mysql-grants.sql on
// MariaDB; the login cannot read mysql.user either.
func TestShippedGrantsMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.orders", "shop.customers")
	e.exec(`CREATE TABLE orders (id INT PRIMARY KEY, total INT)`)
	e.exec(`CREATE TABLE customers (id INT PRIMARY KEY, name TEXT)`)
	e.exec(`CREATE TABLE secrets (id INT PRIMARY KEY, ssn TEXT)`)
	e.exec(`INSERT INTO secrets VALUES (1, ?)`, grantsCanary)
	e.exec(`INSERT INTO customers VALUES (1, 'ann')`)
	for _, stmt := range sqlStatements(shipped(t, "mysql-grants.sql")) {
		e.exec(stmt)
	}
	e.cfg.Source.DSN = fmt.Sprintf("sluice:change-me@tcp(%s)/shop", my.Addr())

	login, err := client.Connect(my.Addr(), "sluice", "change-me", "shop")
	if err != nil {
		t.Fatal(err)
	}
	defer login.Close()
	root := mysqlConn(t, my)
	for _, q := range []string{"SELECT ssn FROM shop.secrets", "SELECT authentication_string FROM mysql.user"} {
		if r, err := login.Execute(q); err == nil {
			t.Fatalf("the shipped login ran %s: %d rows", q, r.RowNumber())
		}
		if r, err := root.Execute(q); err != nil || r.RowNumber() == 0 {
			t.Fatalf("canary: root cannot run %s: %v", q, err)
		}
	}
	grantsRun(t, e, "shop")
}

// grantsRun checks, streams and backfills with the env's login.
func grantsRun(t *testing.T, e *env, schema string) {
	if out, err := runCheck(t, e); err != nil || !strings.Contains(out, "sluice run can start") {
		t.Fatalf("sluice check with the shipped grants: %v\n%s", err, out)
	}
	e.backfill = []string{schema + ".customers"}
	stop, logs := e.startRun()
	e.waitBackfills(1, time.Minute, logs)
	e.exec(`INSERT INTO orders VALUES (7, 70)`)
	// Each table's first shape, the backfilled row, the chunk's event on
	// each of 4 partitions, the insert.
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 2+1+4+1, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	assertAnnounced(t, events)
	got := map[string]bool{}
	for _, ev := range events {
		got[ev.Source.Table+"/"+ev.Op] = true
	}
	if !got["customers/schema"] || !got["customers/r"] || !got["orders/schema"] || !got["orders/c"] {
		t.Fatalf("with the shipped grants, want the tables' first shapes, the backfilled customer and the new order; got %v", got)
	}
}

// shipped reads a file of deploy/database.
func shipped(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../deploy/database/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sqlStatements splits a script of ;-terminated statements, dropping
// comment lines, for a client that runs one statement at a time.
func sqlStatements(script string) []string {
	var lines []string
	for _, l := range strings.Split(script, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "--") {
			lines = append(lines, l)
		}
	}
	var out []string
	for _, s := range strings.Split(strings.Join(lines, "\n"), ";") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
