package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres"
)

// Bookkeeping lives in the target, in schema sluice, so that the rows and
// the position they reach commit in one transaction.
//
//   - apply_positions: per source and partition, the stream sequence of the
//     last event applied, how many events were applied in all, and by which
//     member. Every batch locks its partition's row (FOR UPDATE) first, so
//     two members that both believe they own a partition apply its events
//     one after the other, never twice.
//   - apply_owners: a row each time a partition's events start being
//     applied by another member, from the first sequence it applied.
//   - apply_chunk_keys: the keys a backfill chunk wrote on a partition,
//     until its chunk event, which spares exactly those rows.
const bookkeeping = `
CREATE SCHEMA IF NOT EXISTS sluice;
CREATE TABLE IF NOT EXISTS sluice.apply_positions (
	source text NOT NULL, part int NOT NULL, seq bigint NOT NULL, events bigint NOT NULL,
	member text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, part));
CREATE TABLE IF NOT EXISTS sluice.apply_owners (
	source text NOT NULL, part int NOT NULL, from_seq bigint NOT NULL, member text NOT NULL,
	at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (source, part, from_seq));
CREATE TABLE IF NOT EXISTS sluice.apply_chunk_keys (
	source text NOT NULL, part int NOT NULL, chunk text NOT NULL, key text NOT NULL,
	PRIMARY KEY (source, part, chunk, key));
`

// querier is a connection, a pool or a transaction of the target.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// ensureBookkeeping creates the bookkeeping tables. Members starting
// together race on CREATE ... IF NOT EXISTS, which PostgreSQL can fail
// with a unique violation on its catalog; the loser tries again.
func ensureBookkeeping(ctx context.Context, db querier) error {
	var err error
	for range 3 {
		if _, err = db.Exec(ctx, bookkeeping); err == nil {
			return nil
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23505" {
			break
		}
	}
	return fmt.Errorf("create the bookkeeping tables in schema sluice of the target: %w (the target login needs CREATE on the database)", err)
}

// column is a target table's column as its catalog has it.
type column struct {
	name    string
	typ     string // pg_type.typname, e.g. int4, _text
	notNull bool   // NOT NULL without a default: a row must give it
	kind    sources.Kind
}

// table is a target table: its columns, and the key the events name.
type table struct {
	schema, name string
	ident        string // quoted schema.table, for SQL text
	columns      map[string]*column
	order        []string // column names in catalog order
	key          []string // key columns, in the events' key order
	version      int      // the highest schema_version checked against it
	// dropped are source columns gone from the source that the target
	// keeps (nullable); logged once.
	dropped map[string]bool
}

func (t *table) qualified() string { return t.schema + "." + t.name }

// readTable reads a table from the target's catalog; nil when it does
// not exist.
func readTable(ctx context.Context, q querier, schema, name string) (*table, error) {
	rows, err := q.Query(ctx, `
SELECT a.attname, t.typname, a.attnotnull AND NOT a.atthasdef
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`, schema, name)
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s.%s in the target: %w", schema, name, err)
	}
	defer rows.Close()
	t := &table{schema: schema, name: name, ident: pgx.Identifier{schema, name}.Sanitize(),
		columns: make(map[string]*column), dropped: make(map[string]bool)}
	for rows.Next() {
		c := &column{}
		if err := rows.Scan(&c.name, &c.typ, &c.notNull); err != nil {
			return nil, err
		}
		c.kind = kindOfType(c.typ)
		t.columns[c.name] = c
		t.order = append(t.order, c.name)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the columns of %s.%s in the target: %w", schema, name, err)
	}
	if len(t.order) == 0 {
		return nil, nil
	}
	return t, nil
}

// kindOfType is the kind of a target column's values: the target is a
// PostgreSQL database, whose type names its driver knows.
func kindOfType(typ string) sources.Kind { return postgres.Driver{}.KindOf(typ) }

// uniqueOn tells whether the target has a primary key or unique index on
// exactly the columns cols, which ON CONFLICT needs.
func uniqueOn(ctx context.Context, q querier, t *table, cols []string) (bool, error) {
	rows, err := q.Query(ctx, `
SELECT array_agg(a.attname::text)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid`, t.schema, t.name)
	if err != nil {
		return false, fmt.Errorf("read the unique indexes of %s in the target: %w", t.qualified(), err)
	}
	defer rows.Close()
	want := slices.Sorted(slices.Values(cols))
	for rows.Next() {
		var have []string
		if err := rows.Scan(&have); err != nil {
			return false, err
		}
		slices.Sort(have)
		if slices.Equal(have, want) {
			return true, nil
		}
	}
	return false, rows.Err()
}

// columnType is the target type a created or added column gets. Type
// names come from the network (a shape on the stream), so they never
// reach SQL text: PostgreSQL sources keep their type when it is one of a
// fixed list, everything else follows its kind.
func columnType(c schemas.Column) string {
	switch strings.ToLower(c.Type) {
	case "int2", "smallint":
		return "smallint"
	case "int4", "integer", "int":
		return "integer"
	case "int8", "bigint":
		return "bigint"
	case "float4", "real":
		return "real"
	case "timestamp", "timestamp without time zone":
		return "timestamp"
	case "jsonb":
		return "jsonb"
	case "json":
		return "json"
	case "varchar", "character varying", "text", "bpchar", "char", "character", "name":
		return "text"
	}
	switch c.Kind {
	case sources.KindInteger:
		return "bigint"
	case sources.KindDecimal:
		return "numeric"
	case sources.KindFloat:
		return "double precision"
	case sources.KindBool:
		return "boolean"
	case sources.KindBytes:
		return "bytea"
	case sources.KindDate:
		return "date"
	case sources.KindTimestamp:
		return "timestamptz"
	case sources.KindUUID:
		return "uuid"
	case sources.KindJSON, sources.KindArray:
		return "jsonb"
	}
	// Strings, times (MySQL's TIME runs past 24 hours) and values of no
	// fixed form keep their text.
	return "text"
}

// createTable creates a table from a shape: every column typed by
// columnType, NOT NULL where the source says so, the key as primary key.
func createTable(ctx context.Context, q querier, s schemas.Shape) error {
	var b strings.Builder
	fmt.Fprintf(&b, "CREATE TABLE %s (", pgx.Identifier{s.Schema, s.Table}.Sanitize())
	for i, c := range s.Columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{c.Name}.Sanitize() + " " + columnType(c))
		if c.NotNull || c.Key {
			b.WriteString(" NOT NULL")
		}
	}
	b.WriteString(", PRIMARY KEY (")
	for i, k := range s.Key {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(pgx.Identifier{k}.Sanitize())
	}
	b.WriteString("))")
	if _, err := q.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{s.Schema}.Sanitize()); err != nil {
		return fmt.Errorf("create schema %s in the target: %w", s.Schema, err)
	}
	if _, err := q.Exec(ctx, b.String()); err != nil {
		return fmt.Errorf("create table %s.%s in the target: %w", s.Schema, s.Table, err)
	}
	return nil
}

// addColumn adds a column a shape gained. It is nullable whatever the
// source says: the target's existing rows have no value for it.
func addColumn(ctx context.Context, q querier, t *table, c schemas.Column) error {
	_, err := q.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN IF NOT EXISTS %s %s", t.ident, pgx.Identifier{c.Name}.Sanitize(), columnType(c)))
	if err != nil {
		return fmt.Errorf("add column %s to %s in the target: %w", c.Name, t.qualified(), err)
	}
	return nil
}
