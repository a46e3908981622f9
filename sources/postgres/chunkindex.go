package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
)

// cCollation is the oid of the collation "C", the same in every release
// (C_COLLATION_OID). The planner lets an index serve ORDER BY key COLLATE
// "C" only when the index's collation is this very one: "POSIX", and the
// database's default even where that is C, are other collations to it.
const cCollation = 950

// maxIdentifier is the longest name PostgreSQL keeps (NAMEDATALEN - 1
// bytes); a longer one is cut, with a notice only.
const maxIdentifier = 63

// indexSuffix ends the name of the index a note advises.
const indexSuffix = "_sluice_c"

// chunkAdvice is what would make reading a table's chunks linear. Both
// are empty when an index serves the chunk order already, or the key has
// no text column.
type chunkAdvice struct {
	// why names the key columns whose collation no index orders bytewise.
	why string
	// fix is the statement that creates an index serving the chunk order
	// (after one that drops a failed build of it, when there is one). It
	// is text for an operator: sluice never runs it.
	fix string
}

// keyColumn is a key column as a chunk's SELECT orders it.
type keyColumn struct {
	name      string
	attnum    int16
	collated  bool   // compared COLLATE "C" (text, varchar, char)
	collation string // the column's own collation, for the note
}

// indexShape is what decides whether a btree index serves the chunk
// order: the first len(key) of its key columns.
type indexShape struct {
	columns    []int16  // attnums; 0 for an expression
	collations []uint32 // per key column; 0 for a type without one
	options    []int16  // per key column: 0 is ASC NULLS LAST
	defaults   []bool   // per key column: its operator class is its type's default
	keyAtts    int      // key columns, INCLUDE columns left out
}

// servesChunkOrder tells whether an index scan of ix yields rows in the
// order of ReadChunk's ORDER BY, and so lets the planner use it for the
// ORDER BY and the cursor's row comparison instead of sorting: its
// leading key columns are the key's, in key order, ascending, with the
// default operator class, and those of text columns in collation C.
func servesChunkOrder(ix indexShape, key []keyColumn) bool {
	n := len(key)
	if ix.keyAtts < n || len(ix.columns) < n || len(ix.collations) < n || len(ix.options) < n || len(ix.defaults) < n {
		return false
	}
	for i, k := range key {
		if ix.columns[i] != k.attnum || ix.options[i] != 0 || !ix.defaults[i] {
			return false
		}
		if k.collated && ix.collations[i] != cCollation {
			return false
		}
	}
	return true
}

// readChunkAdvice tells whether reading info's chunks sorts the rest of
// the table each time, and what fixes it, from the catalog alone.
// Nothing read there is run as SQL: names become quoted identifiers in
// the advised statement, which only an operator runs.
func readChunkAdvice(ctx context.Context, conn *pgx.Conn, info tableInfo) (chunkAdvice, error) {
	ident := pgx.Identifier{info.schema, info.name}.Sanitize()
	rows, err := conn.Query(ctx, `SELECT a.attname::text, a.attnum, CASE WHEN t.typbasetype <> 0 THEN t.typbasetype ELSE a.atttypid END,
			coalesce(co.collname::text, ''), c.relkind::text
		FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid JOIN pg_class c ON c.oid = a.attrelid
		LEFT JOIN pg_collation co ON co.oid = a.attcollation
		WHERE a.attrelid = $1::regclass AND a.attname = ANY($2::text[]) AND a.attnum > 0 AND NOT a.attisdropped`, ident, info.key)
	if err != nil {
		return chunkAdvice{}, fmt.Errorf("read the key columns of %s: %w", info.qualified(), err)
	}
	byName := make(map[string]keyColumn, len(info.key))
	var relkind string
	for rows.Next() {
		var k keyColumn
		var typ uint32
		if err := rows.Scan(&k.name, &k.attnum, &typ, &k.collation, &relkind); err != nil {
			rows.Close()
			return chunkAdvice{}, fmt.Errorf("read the key columns of %s: %w", info.qualified(), err)
		}
		if _, ok := chunkKeyTypes[typ]; !ok {
			// Backfill refuses this key, and says so itself.
			rows.Close()
			return chunkAdvice{}, nil
		}
		k.collated = collated(typ)
		byName[k.name] = k
	}
	if err := rows.Err(); err != nil {
		return chunkAdvice{}, fmt.Errorf("read the key columns of %s: %w", info.qualified(), err)
	}
	key := make([]keyColumn, len(info.key))
	var text []string
	for i, name := range info.key {
		k, ok := byName[name]
		if !ok {
			return chunkAdvice{}, fmt.Errorf("read the key columns of %s: no column %q", info.qualified(), name)
		}
		key[i] = k
		if k.collated {
			coll := strconv.Quote(k.collation)
			if k.collation == "default" {
				coll += " (the database's)"
			}
			text = append(text, fmt.Sprintf("%s has collation %s", k.name, coll))
		}
	}
	if len(text) == 0 {
		return chunkAdvice{}, nil // numbers and uuids: every btree key index orders them as chunks do
	}

	indexes, err := readIndexShapes(ctx, conn, ident)
	if err != nil {
		return chunkAdvice{}, fmt.Errorf("read the indexes of %s: %w", info.qualified(), err)
	}
	for _, ix := range indexes {
		if servesChunkOrder(ix, key) {
			return chunkAdvice{}, nil
		}
	}

	name, failed, err := chunkIndexName(ctx, conn, info)
	if err != nil {
		return chunkAdvice{}, err
	}
	cols := make([]string, len(key))
	for i, k := range key {
		cols[i] = pgx.Identifier{k.name}.Sanitize()
		if k.collated {
			cols[i] += ` COLLATE "C"`
		}
	}
	create := "CREATE INDEX CONCURRENTLY "
	why := "key column " + strings.Join(text, ", key column ")
	if relkind == "p" {
		// PostgreSQL builds the index of a partitioned table only
		// without CONCURRENTLY.
		create = "CREATE INDEX "
		why += "; the table is partitioned, so building the index blocks writes to it meanwhile (or build one CONCURRENTLY per partition and ATTACH each to an index created ON ONLY the table)"
	}
	fix := create + pgx.Identifier{name}.Sanitize() + " ON " + ident + " (" + strings.Join(cols, ", ") + ")"
	if failed {
		why += fmt.Sprintf("; index %s of the table is not valid (a CREATE INDEX CONCURRENTLY that failed, or still runs): once it is not running, drop it first", name)
		fix = "DROP INDEX CONCURRENTLY " + pgx.Identifier{info.schema, name}.Sanitize() + "; " + fix
	}
	return chunkAdvice{why: why, fix: fix}, nil
}

// readIndexShapes lists the valid, not partial btree indexes of the table
// ident names.
func readIndexShapes(ctx context.Context, conn *pgx.Conn, ident string) ([]indexShape, error) {
	rows, err := conn.Query(ctx, `SELECT i.indkey::int2[], i.indcollation::oid[], i.indoption::int2[], i.indnkeyatts,
			ARRAY(SELECT o.opcdefault FROM unnest(i.indclass::oid[]) WITH ORDINALITY k(oid, ord)
				JOIN pg_opclass o ON o.oid = k.oid ORDER BY k.ord)
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
		WHERE i.indrelid = $1::regclass AND i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree'`, ident)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (indexShape, error) {
		var ix indexShape
		var keyAtts int16
		err := r.Scan(&ix.columns, &ix.collations, &ix.options, &keyAtts, &ix.defaults)
		ix.keyAtts = int(keyAtts)
		return ix, err
	})
}

// chunkIndexName is the name of the index a note advises for info: the
// table's name and indexSuffix, cut to what PostgreSQL keeps, numbered
// when another relation of the schema has it. failed reports a not valid
// index of this table by that name: a build of it that failed, to be
// dropped before it is built again.
func chunkIndexName(ctx context.Context, conn *pgx.Conn, info tableInfo) (name string, failed bool, err error) {
	for n := 1; n < 100; n++ {
		suffix := indexSuffix
		if n > 1 {
			suffix += strconv.Itoa(n)
		}
		name = truncateIdentifier(info.name, maxIdentifier-len(suffix)) + suffix
		var ours *bool // NULL: a relation of another kind
		err := conn.QueryRow(ctx, `SELECT i.indrelid = $3::regclass AND NOT i.indisvalid
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_index i ON i.indexrelid = c.oid
			WHERE n.nspname = $1 AND c.relname = $2`, info.schema, name, pgx.Identifier{info.schema, info.name}.Sanitize()).Scan(&ours)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return name, false, nil
		case err != nil:
			return "", false, fmt.Errorf("look up index name %s.%s: %w", info.schema, name, err)
		case ours != nil && *ours:
			return name, true, nil
		}
	}
	return "", false, fmt.Errorf("no free index name for %s: the names ending %s to %s99 are taken", info.qualified(), indexSuffix, indexSuffix)
}

// truncateIdentifier cuts s to at most n bytes without splitting a
// character.
func truncateIdentifier(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// ChunkAdvice tells why reading table's chunks in key order would sort
// the rest of the table for every chunk, and the statement that creates
// the index that avoids it; both are empty when nothing is amiss. The
// backfill manager asks once per job (backfill.ChunkAdvisor).
func (s *Source) ChunkAdvice(ctx context.Context, table string) (why, fix string, err error) {
	defer func() { err = valueFree(err) }()
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	info, err := s.userTable(table)
	if err != nil {
		return "", "", err
	}
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return "", "", err
	}
	a, err := readChunkAdvice(ctx, conn, info)
	if err != nil {
		return "", "", s.dropBackfillConnLocked(err)
	}
	return a.why, a.fix, nil
}

// chunkNote is sluice check's note for a table whose chunks no index
// orders.
func chunkNote(info tableInfo, a chunkAdvice) string {
	return fmt.Sprintf(`table %s: no index serves backfill's chunk order, the key's COLLATE "C" (byte) order (%s); create one for a linear backfill, as backfill otherwise sorts the rest of the table for every chunk (time growing with the square of the rows): %s`,
		info.qualified(), a.why, a.fix)
}
