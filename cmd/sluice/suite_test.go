package main

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// database is a kind of source the end-to-end tests run against. A
// behaviour both kinds share is one test that runs on each, as subtests
// named by kind (eachDatabase); what differs between them is here, as
// data, so that the test reads the same for both.
type database struct {
	kind   string // the source kind, and the subtest's name
	schema string // the schema of the test's tables
	source string // the source name env gives sluice
	// start starts a private server, with database shop, and sluice's
	// config capturing tables (unqualified: in schema).
	start func(t *testing.T, tables ...string) (*env, testDB)

	// typesDDL creates all_types (every type, key id) and orders
	// (composite key region, id; qty; note); typesRow inserts row 1 of
	// all_types, whose column values are typesWant as JSON.
	typesDDL  []string
	typesRow  string
	typesWant map[string]string
	// textColumn is a text column of all_types, typesText its value in
	// typesRow.
	textColumn, typesText string
	// fullBefore: an update carries the row's whole before image (MySQL's
	// binlog_row_image=FULL); PostgreSQL's default replica identity sends
	// none.
	fullBefore bool
	// upsert inserts items row %d with v 0, or adds 1 to its v.
	upsert string
	// intType is the database's name of the int type, as `sluice schema
	// --shape` shows it.
	intType string
	// gapCause is in the recorded cause of a lost log position.
	gapCause string
}

// testDB is the test's own connection to the database.
type testDB interface {
	crashDB
	// server is the database server, which can go away and come back.
	server() restartable
	// loseLog makes sluice's log position unavailable: the slot is
	// dropped, or the binlogs purged.
	loseLog(ctx context.Context) error
}

func databases() []database {
	return []database{
		{
			kind: "postgres", schema: "public", source: "pg1",
			start: func(t *testing.T, tables ...string) (*env, testDB) {
				pg := pgtest.New(t)
				e := newEnv(t, pg, qualified("public", tables)...)
				return e, pgTestDB{pgCrashDB{pgConn(t, pg)}, pg}
			},
			typesDDL: []string{typesSchema}, typesRow: typesRow, typesWant: typesWant,
			textColumn: "t", typesText: `"tab\t\"quote\" \\ back"`,
			upsert:   "INSERT INTO items VALUES (%d, 0) ON CONFLICT (id) DO UPDATE SET v = items.v + 1",
			intType:  "int4",
			gapCause: "did not exist",
		},
		{
			kind: "mysql", schema: "shop", source: "my1",
			start: func(t *testing.T, tables ...string) (*env, testDB) {
				my := mysqltest.New(t)
				e := newMySQLEnv(t, my, qualified("shop", tables)...)
				return e, mysqlTestDB{mysqlCrashDB{mysqlConn(t, my)}, my}
			},
			typesDDL:   []string{mysqlTypesTable, `CREATE TABLE orders (region VARCHAR(8), id INT, qty INT, note TEXT, PRIMARY KEY (region, id))`},
			typesRow:   mysqlTypesRow,
			typesWant:  mysqlTypesWant,
			textColumn: "tx", typesText: `"text\nline"`,
			fullBefore: true,
			upsert:     "INSERT INTO items VALUES (%d, 0) ON DUPLICATE KEY UPDATE v = v + 1",
			intType:    "int",
			gapCause:   "purged",
		},
	}
}

// eachDatabase runs test on every kind of database, in parallel.
func eachDatabase(t *testing.T, test func(t *testing.T, db database)) {
	for _, db := range databases() {
		t.Run(db.kind, func(t *testing.T) {
			t.Parallel()
			test(t, db)
		})
	}
}

func qualified(schema string, tables []string) []string {
	out := make([]string, len(tables))
	for i, t := range tables {
		out[i] = schema + "." + t
	}
	return out
}

// subject is the subject prefix of a table's events: cdc.source.schema.table.
func (db database) subject(table string) string {
	return fmt.Sprintf("cdc.%s.%s.%s", db.source, db.schema, table)
}

type pgTestDB struct {
	pgCrashDB
	pg *pgtest.Server
}

func (d pgTestDB) server() restartable { return d.pg }

func (d pgTestDB) loseLog(ctx context.Context) error {
	_, err := d.conn.Exec(ctx, `SELECT pg_drop_replication_slot('sluice_pg1')`)
	return err
}

type mysqlTestDB struct {
	mysqlCrashDB
	my *mysqltest.Server
}

func (d mysqlTestDB) server() restartable { return d.my }

func (d mysqlTestDB) loseLog(ctx context.Context) error { return d.my.PurgeBinlogs(ctx) }

// tx runs statements in one transaction, on whichever database.
func tx(t *testing.T, db testDB, stmts ...string) {
	t.Helper()
	if err := db.tx(stmts); err != nil {
		t.Fatalf("%s: %v", strings.Join(stmts, "; "), err)
	}
}
