// Package sourcetest checks a driver against the contract of
// sources.Driver and sources.Source: the conformance suite every driver
// runs, against its real database, through the same Driver calls that
// sluice run and sluice check make. A database package runs it from one
// test with a Harness; a new database gets every part for free.
package sourcetest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// Harness is a driver and a database it can capture.
type Harness struct {
	Driver sources.Driver
	// Spec connects to the database. The suite copies it for each part,
	// with a Name and Tables of the part's own: Name must leave room for
	// a suffix (the suite appends "_" and the part's name).
	Spec sources.Spec
	// Table and Insert serve a driver without DB (an in-memory one): Spec
	// captures Table, which exists with the columns id (an integer
	// primary key) and v (text), and no rows; Insert commits the row
	// (id, v) to it. With DB the suite makes its own.
	Table  string // schema.table (MySQL: db.table)
	Insert func(ctx context.Context, id int, v string) error

	// DB is the database as SQL: with it every part runs; without it only
	// "contract" does, and the others say they need it.
	DB Database
	// Differs gives, by the name of a case of the values part, the JSON
	// this driver's changes carry where it differs from the contract the
	// suite states: where the database has no such type (MySQL's BOOLEAN
	// is a number), or where the drivers disagree and the contract is yet
	// to settle it. Each entry says why in a comment.
	Differs map[string]string
	// LoseLog, when set, makes the log from where spec's source stands
	// unreadable (PostgreSQL: drops its slot; MySQL: purges the binlogs),
	// for the reset part. The source is not streaming when it is called.
	LoseLog func(ctx context.Context, spec sources.Spec) error
	// Lock, when set, holds a lock on table (schema.table) from a
	// connection of its own that keeps every SELECT of it waiting until
	// unlock: the filters part reads behind it with a statement timeout
	// and with a context that ends.
	Lock func(ctx context.Context, table string) (unlock func() error, err error)
	// ParsedSQL, when set, starts recording what the server parses, and
	// returns what it parsed since: each statement's text with its
	// placeholders, never the values bound to them. The filters part
	// checks that no filter text ever becomes SQL.
	ParsedSQL func(ctx context.Context) (since func(context.Context) ([]string, error), err error)
}

// Database is a SQL database the suite creates tables in and writes to:
// its methods are the dialect the suite's statements need. The suite
// writes CREATE TABLE, INSERT ... VALUES, UPDATE, DELETE and ALTER TABLE
// ... ADD COLUMN in the SQL both PostgreSQL and MySQL read, with the types
// and literals given here.
type Database interface {
	// Schema holds the suite's tables (a PostgreSQL schema, a MySQL
	// database); Spec's connection reaches it, and the suite names its
	// tables schema.table.
	Schema() string
	// Exec runs the statements in one transaction and commits it (DDL may
	// commit by itself, as MySQL's does).
	Exec(ctx context.Context, stmts ...string) error
	// Type is the column type of a kind of value; "" when the database has
	// none (the values part leaves the kind out and says so).
	Type(k Kind) string
	// TextKeys are the column types of text key columns, one for each
	// collation worth reading in key order, by a name for the test ("C",
	// "utf8mb4_unicode_ci"). Whatever the collation, chunks come in the
	// order of the text's UTF-8 bytes.
	TextKeys() map[string]string
	// Ident quotes an identifier.
	Ident(name string) string
	// String and Bytes are literals of a text and of a binary value.
	String(s string) string
	Bytes(b []byte) string
}

// Kind is a kind of value the suite stores and reads back.
type Kind string

// The kinds of value, each a column type of every SQL database.
const (
	Int       Kind = "integer"     // 32-bit signed
	BigInt    Kind = "big integer" // 64-bit signed
	Decimal   Kind = "decimal"     // exact, 30 digits with 10 after the point
	Float     Kind = "float"       // 64-bit IEEE 754
	Text      Kind = "text"        // UTF-8 text of any length, not a key
	Bool      Kind = "boolean"
	Timestamp Kind = "timestamp" // a date and time without a zone, in microseconds
	Date      Kind = "date"
	Bytes     Kind = "bytes"
	JSON      Kind = "json"
)

// part is one part of the suite; sql parts need Harness.DB.
type part struct {
	name string
	sql  bool
	run  func(t *testing.T, h Harness)
}

var parts = []part{
	{"contract", false, contract},
	{"catalog", true, catalog},
	{"changes", true, changes},
	{"values", true, values},
	{"keys", true, keyOrder},
	{"transaction", true, transaction},
	{"ddl", true, ddl},
	{"resume", true, resume},
	{"filters", true, filters},
	{"reset", true, reset},
}

// Run runs every part of the suite as a subtest: contract, catalog,
// changes, values, keys, transaction, ddl, resume, filters and reset.
func Run(t *testing.T, h Harness) {
	t.Helper()
	RunParts(t, h)
}

// RunParts runs the named parts of the suite, all of them when none is
// named; a driver runs some again under other settings (MySQL's file
// positions run resume and reset).
func RunParts(t *testing.T, h Harness, names ...string) {
	t.Helper()
	for _, n := range names {
		if !slices.ContainsFunc(parts, func(p part) bool { return p.name == n }) {
			t.Fatalf("sourcetest has no part %q", n)
		}
	}
	for _, p := range parts {
		if len(names) > 0 && !slices.Contains(names, p.name) {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			if p.sql && h.DB == nil {
				t.Skip("needs Harness.DB: the driver's database as SQL")
			}
			p.run(t, h)
		})
	}
}

// testCtx bounds a part.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// contract checks, in order: Check finds nothing wrong and shows the table
// with its key; Open's source lists the table and its columns and names
// its database; Stream calls sources.Opened before it hands over a change,
// then hands over an insert and a commit; watermarks come through the
// stream as signals, and nothing else does; a chunk reads the row; Close
// ends it all.
func contract(t *testing.T, h Harness) {
	ctx := testCtx(t)
	spec, table, insert := h.Spec, h.Table, h.Insert
	if h.DB != nil {
		d := dialect{h.DB}
		spec, table = d.spec(h, "contract", "items")
		d.recreate(t, ctx, "items", "id", col{name: "id", kind: Int}, col{name: "v", kind: Text})
		insert = func(ctx context.Context, id int, v string) error {
			return h.DB.Exec(ctx, d.insert("items", []string{itoa(id), h.DB.String(v)}))
		}
	}

	pf := h.Driver.Check(ctx, spec)
	if len(pf.Problems) > 0 {
		t.Fatalf("Check: %q", pf.Problems)
	}
	i := slices.IndexFunc(pf.Catalog.Tables, func(c sources.CapturedTable) bool { return c.Key.Table == table })
	if i < 0 || !slices.Equal(pf.Catalog.Tables[i].Key.Columns, []string{"id"}) {
		t.Errorf("Check's catalog %+v, want %s keyed by id", pf.Catalog.Tables, table)
	}

	src := open(t, ctx, h.Driver, spec)
	if got := src.Tables(); !slices.Equal(got, []string{table}) {
		t.Errorf("Tables() = %q, want just %s (the signal table is not a user table)", got, table)
	}
	if cols, err := src.Columns(ctx, table); err != nil || !slices.Equal(cols, []string{"id", "v"}) {
		t.Errorf("Columns(%s) = %q, %v; want id, v", table, cols, err)
	}
	if src.Database() == "" {
		t.Error("Database() is empty: events would carry no source.db")
	}
	if n := src.RetainedBytes(); n < -1 {
		t.Errorf("RetainedBytes() = %d: want a size, or -1 for unknown", n)
	}

	st := startStream(t, ctx, src, "")
	if err := insert(ctx, 1, "a"); err != nil {
		t.Fatal(err)
	}
	c := st.change(t, ctx, onTable(table))
	if c.Op != sources.OpCreate || len(c.KeyValues()) != 1 || string(c.KeyValues()[0]) != "1" {
		t.Errorf("streamed %s key %s, want an insert of key 1", c.Op, c.KeyValues())
	}
	if _, ok := src.ReadSignal(c); ok {
		t.Errorf("ReadSignal took a change of %s for a signal", table)
	}
	src.Ack(st.commit(t, ctx).Pos)

	for _, kind := range []string{"low", "high"} {
		if err := src.WriteSignal(ctx, kind, "conformance"); err != nil {
			t.Fatalf("WriteSignal: %v", err)
		}
		c = st.change(t, ctx, func(c *sources.Change) bool {
			sig, ok := src.ReadSignal(c)
			return ok && sig.Source == spec.Name && sig.Kind != "heartbeat"
		})
		if sig, _ := src.ReadSignal(c); sig != (sources.Signal{Source: spec.Name, Kind: kind, ID: "conformance"}) {
			t.Errorf("ReadSignal = %+v, want the %s watermark conformance of %s", sig, kind, spec.Name)
		}
		if len(c.Table.Key) != 1 {
			t.Errorf("the signal change of %s has key %v, want one column", c.Table.QualifiedName(), c.Table.Key)
		}
	}

	chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: table, Limit: 10})
	if err != nil {
		t.Fatalf("ReadChunk: %v", err)
	}
	if len(chunk.Rows) != 1 || chunk.Table == nil || !slices.Equal(chunk.Table.Columns, []string{"id", "v"}) {
		t.Errorf("ReadChunk = %d rows of %+v, want the one row (id, v)", len(chunk.Rows), chunk.Table)
	} else if err := kindsErr(chunk.Table); err != nil {
		t.Errorf("ReadChunk read %v", err)
	}
	if n, err := src.EstimateRows(ctx, table); err != nil || n < 0 {
		t.Errorf("EstimateRows = %d, %v", n, err)
	}
	if h.DB != nil {
		signal := h.DB.Schema() + ".sluice_signal"
		if _, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: signal, Limit: 10}); err == nil {
			t.Errorf("ReadChunk read the signal table %s", signal)
		}
	}
	st.stop(t)
}

// open opens a source of spec, closed when the test ends.
func open(t *testing.T, ctx context.Context, d sources.Driver, spec sources.Spec) sources.Source {
	t.Helper()
	src, err := d.Open(ctx, spec)
	if err != nil {
		t.Fatalf("Open %s: %v", spec.Name, err)
	}
	t.Cleanup(func() { src.Close(context.Background()) })
	return src
}
