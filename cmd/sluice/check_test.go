package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/tlstest"
)

func runCheck(t *testing.T, e *env) (string, error) {
	t.Helper()
	var out strings.Builder
	err := sidecar.Check(context.Background(), &out, e.cfgYML)
	return out.String(), err
}

func assertLists(t *testing.T, out string, fragments ...string) {
	t.Helper()
	for _, f := range fragments {
		if !strings.Contains(out, f) {
			t.Errorf("sluice check does not report %q:\n%s", f, out)
		}
	}
}

// sluice check lists every problem of a misconfigured PostgreSQL in one
// run, changes nothing, and passes a good one.
func TestCheckPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t, pgtest.Options{Settings: map[string]string{"wal_level": "replica"}})
	e := newEnv(t, pg, "public.items", "public.nokey")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	e.exec(`CREATE TABLE nokey (v int)`)
	out, err := runCheck(t, e)
	if !errors.Is(err, sidecar.ErrBlocked) {
		t.Fatalf("check = %v, want sidecar.ErrBlocked:\n%s", err, out)
	}
	assertLists(t, out, "ok    config", `FAIL  postgres source pg1: wal_level is "replica"`, "ALTER SYSTEM SET wal_level = logical",
		"public.nokey", "ADD PRIMARY KEY", "ok    NATS store")
	if n := strings.Count(out, "FAIL"); n != 2 {
		t.Errorf("%d problems reported, want 2:\n%s", n, out)
	}
	e.exec(`SELECT 1 FROM pg_publication WHERE pubname = 'sluice_pg1'`)
	var pubs int
	if err := pgConn(t, pg).QueryRow(context.Background(), `SELECT count(*) FROM pg_publication`).Scan(&pubs); err != nil || pubs != 0 {
		t.Errorf("check created %d publications (%v): it must change nothing", pubs, err)
	}

	good := pgtest.New(t)
	e = newEnv(t, good, "public.items")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	if out, err := runCheck(t, e); err != nil || !strings.Contains(out, "sluice run can start") {
		t.Fatalf("a good PostgreSQL: %v\n%s", err, out)
	}
}

// The same for MariaDB: binlog_format=STATEMENT and a table without key,
// in one run.
func TestCheckMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t, mysqltest.Options{Settings: map[string]string{"binlog_format": "STATEMENT"}})
	e := newMySQLEnv(t, my, "shop.items", "shop.nokey")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY)`)
	e.exec(`CREATE TABLE nokey (v INT)`)
	out, err := runCheck(t, e)
	if !errors.Is(err, sidecar.ErrBlocked) {
		t.Fatalf("check = %v, want sidecar.ErrBlocked:\n%s", err, out)
	}
	assertLists(t, out, "binlog_format is STATEMENT", "binlog_format = ROW", "shop.nokey")
	if n := strings.Count(out, "FAIL"); n != 2 {
		t.Errorf("%d problems reported, want 2:\n%s", n, out)
	}
}

// sluice check reports what the source connection's TLS turned out to be:
// a MariaDB that refuses plaintext fails without source.tls, and passes
// with it, verified.
func TestCheckTLS(t *testing.T) {
	t.Parallel()
	f := tlstest.New(t)
	my := mysqltest.New(t, mysqltest.Options{TLSCert: f.ServerCert, TLSKey: f.ServerKey,
		Settings: map[string]string{"require_secure_transport": "ON"}})
	e := newMySQLEnv(t, my, "shop.items")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY)`)
	out, err := runCheck(t, e)
	if !errors.Is(err, sidecar.ErrBlocked) {
		t.Fatalf("check = %v, want sidecar.ErrBlocked:\n%s", err, out)
	}
	assertLists(t, out, "FAIL  mysql source my1: MySQL at", "requires secure transport", "source.tls.mode: verify-full")
	if strings.Contains(out, "password") {
		t.Errorf("plaintext refused reads as a password problem:\n%s", out)
	}

	e.setYAML("tables: [shop.items]}", fmt.Sprintf("tables: [shop.items], tls: {mode: verify-full, ca: %q}}", f.CA))
	out, err = runCheck(t, e)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	assertLists(t, out, "ok    mysql source my1", "ok    TLS (query): TLS 1.", ", server verified (verify-full)")
	if strings.Contains(out, "WARN") {
		t.Errorf("a warning on loopback:\n%s", out)
	}
}

// sluice check prints what leaves sluice of each captured table's columns,
// and fails a policy that matches no column, naming the near miss.
func TestCheckPrivacyCoverage(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.users", "public.items")
	e.exec(`CREATE TABLE users (id int PRIMARY KEY, email text, ssn text)`)
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, name text)`)
	e.setYAML("replicas: 1}", "replicas: 1}\nprivacy: {columns: {public.users.email: drop, public.users.SSN: mask}}")
	out, err := runCheck(t, e)
	if !errors.Is(err, sidecar.ErrBlocked) {
		t.Fatalf("check = %v, want sidecar.ErrBlocked:\n%s", err, out)
	}
	assertLists(t, out, "privacy of public.items: no policy; as they are: id, name",
		"privacy of public.users: email drop; as they are: id, ssn",
		"FAIL  privacy coverage: privacy policy: privacy.columns.public.users.SSN matches no column of public.users (did you mean ssn?")
	e.setYAML("public.users.SSN: mask", "public.users.ssn: mask")
	out, err = runCheck(t, e)
	if err != nil {
		t.Fatalf("check with exact policies: %v\n%s", err, out)
	}
	assertLists(t, out, "privacy of public.users: email drop, ssn mask; as they are: id", "ok    privacy coverage",
		// PostgreSQL 15: whether the log position survives a failover.
		"slot sluice_pg1: the slot does not survive a failover")
}

// sluice check advises the index that makes the backfill of a table keyed
// by text in a collation other than C linear, as a warning: the check
// still passes. Once the advised index exists, the warning is gone.
func TestCheckCollationAdvice(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items", "public.ids")
	e.exec(`CREATE TABLE items (name text COLLATE "en-x-icu", n int, PRIMARY KEY (name, n))`)
	e.exec(`CREATE TABLE ids (id int PRIMARY KEY, name text)`)
	const create = `CREATE INDEX CONCURRENTLY "items_sluice_c" ON "public"."items" ("name" COLLATE "C", "n")`
	out, err := runCheck(t, e)
	if err != nil {
		t.Fatalf("check = %v, want a pass with a warning:\n%s", err, out)
	}
	assertLists(t, out, "WARN  table public.items: ", "backfill otherwise sorts the rest of the table for every chunk",
		": "+create+"\n", "sluice run can start")
	if n := strings.Count(out, "WARN"); n != 1 {
		t.Errorf("%d warnings, want 1 (public.items):\n%s", n, out)
	}
	e.exec(create)
	if out, err = runCheck(t, e); err != nil || strings.Contains(out, "WARN") {
		t.Errorf("check after the advised index = %v:\n%s", err, out)
	}
}
