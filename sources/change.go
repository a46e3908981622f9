// Package sources holds the event model shared by every database source and
// the Source interface the pipeline drives. One sub-package per database
// implements it; the pipeline, sink and checkpoint code never look inside a
// source's positions.
package sources

import (
	"time"
)

// Op is the kind of a row change, as written in the event's "op" field.
type Op string

// The ops of DESIGN.md ("The event").
const (
	OpCreate   Op = "c"
	OpUpdate   Op = "u"
	OpDelete   Op = "d"
	OpRead     Op = "r" // backfill or snapshot read
	OpTruncate Op = "t"
)

// Position is a point in a source's log in the source's own canonical text
// form (a Postgres LSN such as "0/16B3748", a MySQL GTID set, "file:pos").
// Only the source that produced a Position parses it; everyone else stores,
// compares for equality and prints it.
type Position string

// Table is the shape of a captured table at one schema version. A Table is
// shared by every change of that shape and never mutated: a shape change
// produces a new Table.
type Table struct {
	Schema  string // Postgres schema, MySQL database
	Name    string
	Columns []string // in table order
	// Types are the database's own type names, aligned with Columns: what
	// users read (shapes, x-sluice-type), and what tells shapes apart.
	Types []string
	// Kinds are the columns' logical kinds, aligned with Columns, which
	// the driver maps from its type names: code outside the driver reads
	// these, never Types. nil when the source does not know (ColumnKind).
	Kinds []Kind
	// NotNull tells, aligned with Columns, which columns are declared NOT
	// NULL; nil when the source does not know.
	NotNull []bool
	// Key holds the indexes into Columns of the primary-key columns, in key order.
	Key     []int
	Version int // schema version, increases with every shape change
}

// QualifiedName returns "schema.table".
func (t *Table) QualifiedName() string { return t.Schema + "." + t.Name }

// Value is one column's value already in its JSON form (DESIGN.md: numerics
// as exact strings, timestamps RFC 3339, bytes base64...). SQL NULL is the
// JSON literal null; a nil Value means the source did not provide the value
// (an unchanged TOASTed column, or a non-key column of a key-only old row).
type Value []byte

// Null is the JSON form of SQL NULL.
var Null = Value("null")

// Change is one row change, in log order.
type Change struct {
	Op    Op
	Table *Table
	// Before and After are aligned with Table.Columns. A nil slice means the
	// row image does not exist (no before for an insert, no after for a
	// delete) or the database did not provide it.
	Before []Value
	After  []Value
	// Pos is the position of the change's transaction (its commit), shared by
	// all the transaction's changes; message ids add the index within it.
	Pos        Position
	TxID       uint64
	CommitTime time.Time
	// Chunk is the backfill chunk that read this row (Op is OpRead); empty
	// for changes from the log.
	Chunk string
}

// KeyValues returns the primary-key values of the change in key order, taken
// from After, or from Before for a delete. For a truncate it returns nil.
func (c *Change) KeyValues() []Value {
	if c.Op == OpTruncate {
		return nil
	}
	row := c.After
	if row == nil {
		row = c.Before
	}
	key := make([]Value, len(c.Table.Key))
	for i, col := range c.Table.Key {
		key[i] = row[col]
	}
	return key
}

// Commit marks the end of a transaction in the log.
type Commit struct {
	// Pos is where streaming resumes to see only later transactions; it is
	// acknowledged to the database once every change before it is stored.
	Pos  Position
	Time time.Time
}
