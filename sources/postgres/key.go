package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
)

// index is a primary key, unique index or replica identity index of a
// table, as the catalog describes it.
type index struct {
	name     string
	primary  bool
	identity bool // pg_index.indisreplident: the replica identity index
	// unique holds when the index alone guarantees one row per value:
	// unique, checked at once (not deferrable), valid, not partial and over
	// plain columns. NULLs still repeat, hence notNull.
	unique  bool
	columns []string // key columns in index order, INCLUDE columns left out
	notNull []bool
}

// keyUsable tells whether the index identifies a row on its own.
func (ix index) keyUsable() bool { return ix.unique && !slices.Contains(ix.notNull, false) }

// readIndexes lists a table's primary key, unique and replica identity indexes.
func readIndexes(ctx context.Context, conn *pgx.Conn, oid uint32) ([]index, error) {
	rows, err := conn.Query(ctx, `SELECT ic.relname::text, i.indisprimary, i.indisreplident,
			i.indisunique AND i.indimmediate AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL,
			ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE k.ord <= i.indnkeyatts ORDER BY k.ord),
			ARRAY(SELECT a.attnotnull FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
				JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
				WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
		FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		WHERE i.indrelid = $1 AND (i.indisprimary OR i.indisunique OR i.indisreplident)`, oid)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var ix index
		err := r.Scan(&ix.name, &ix.primary, &ix.identity, &ix.unique, &ix.columns, &ix.notNull)
		return ix, err
	})
}

// keyChoice is the key chooseKey settled on, or why there is none.
type keyChoice struct {
	columns   []string
	from, why string
	// problem names why the table cannot be captured and the fix; empty
	// with no columns means the table has no candidate key at all.
	problem string
}

// chooseKey decides which columns key the events of table qn, in this
// order of preference:
//
//  1. the primary key;
//  2. source.keys, under REPLICA IDENTITY FULL (the old row is whole) or
//     USING INDEX when the index holds every listed column;
//  3. the replica identity index, under USING INDEX;
//  4. under FULL, the unique index over NOT NULL columns with the fewest
//     columns, then the first by name, so every start picks the same one.
//
// A key must be in the old row pgoutput sends for updates and deletes:
// under DEFAULT identity without a primary key that row is empty (and
// PostgreSQL refuses the updates once the table is published), so a unique
// index there is named in the fix, not used.
func chooseKey(qn string, identity byte, indexes []index, configured []string, listed bool) keyChoice {
	var pk, replIdent, best *index
	for i := range indexes {
		ix := &indexes[i]
		switch {
		case ix.primary:
			pk = ix
		case ix.keyUsable() && (best == nil || len(ix.columns) < len(best.columns) ||
			len(ix.columns) == len(best.columns) && ix.name < best.name):
			best = ix
		}
		if ix.identity {
			replIdent = ix
		}
	}
	quoted := quoteQualified(qn)
	switch {
	case pk != nil && identity == 'i' && replIdent != nil && !subset(pk.columns, replIdent.columns):
		return keyChoice{problem: fmt.Sprintf("table %s has the primary key (%s), but its replica identity is USING INDEX %s (%s), so deletes and key updates would carry no primary key: run ALTER TABLE %s REPLICA IDENTITY DEFAULT",
			qn, strings.Join(pk.columns, ", "), replIdent.name, strings.Join(replIdent.columns, ", "), quoted)}
	case pk != nil:
		return keyChoice{columns: pk.columns, from: "primary key"}
	case identity == 'f' && listed:
		return keyChoice{columns: configured, from: "source.keys", why: "replica identity FULL"}
	case identity == 'f' && best != nil:
		return keyChoice{columns: best.columns, from: "unique index " + best.name, why: "replica identity FULL"}
	case identity == 'i' && replIdent == nil:
		return keyChoice{problem: fmt.Sprintf("table %s has no primary key and its replica identity index is gone, so deletes carry no key: run ALTER TABLE %s REPLICA IDENTITY USING INDEX <a unique index over NOT NULL columns>, or REPLICA IDENTITY FULL",
			qn, quoted)}
	case identity == 'i' && listed && !subset(configured, replIdent.columns):
		return keyChoice{problem: fmt.Sprintf("source.keys lists (%s) for table %s, but its replica identity is USING INDEX %s (%s), so deletes would not carry that key: list columns of the index, or run ALTER TABLE %s REPLICA IDENTITY FULL",
			strings.Join(configured, ", "), qn, replIdent.name, strings.Join(replIdent.columns, ", "), quoted)}
	case identity == 'i' && listed:
		return keyChoice{columns: configured, from: "source.keys", why: "replica identity USING INDEX " + replIdent.name}
	case identity == 'i':
		return keyChoice{columns: replIdent.columns, from: "unique index " + replIdent.name, why: "replica identity USING INDEX"}
	case listed:
		return keyChoice{problem: fmt.Sprintf("table %s has no primary key and source.keys lists its key, but its replica identity is not FULL: run ALTER TABLE %s REPLICA IDENTITY FULL",
			qn, quoted)}
	case best != nil:
		return keyChoice{problem: fmt.Sprintf("table %s has no primary key and its replica identity is %s, so PostgreSQL logs no old key for updates and deletes: use its unique index %s (%s) with ALTER TABLE %s REPLICA IDENTITY USING INDEX %s",
			qn, identityName(identity), best.name, strings.Join(best.columns, ", "), quoted, pgx.Identifier{best.name}.Sanitize())}
	}
	return keyChoice{}
}

// subset tells whether every column of a is in b.
func subset(a, b []string) bool {
	for _, c := range a {
		if !slices.Contains(b, c) {
			return false
		}
	}
	return true
}

func identityName(identity byte) string {
	switch identity {
	case 'n':
		return "NOTHING"
	case 'f':
		return "FULL"
	case 'i':
		return "USING INDEX"
	}
	return "DEFAULT"
}

// quoteQualified quotes schema.table for a fix the operator pastes.
func quoteQualified(qn string) string {
	schema, name, _ := strings.Cut(qn, ".")
	return pgx.Identifier{schema, name}.Sanitize()
}

// Captured tells, changing nothing, which key each captured table's
// events carry and why, and its columns: what sluice check shows. Tables
// that cannot be captured are left out; Check names them with the fix.
func Captured(ctx context.Context, cfg Config) (sources.Catalog, error) {
	var cat sources.Catalog
	cfg = cfg.withNames()
	s := &Source{cfg: cfg}
	login, err := s.login(ctx)
	if err != nil {
		return cat, err
	}
	conn, err := connect(ctx, cfg, false, login)
	if err != nil {
		return cat, err
	}
	defer conn.Close(context.Background())
	tables, _, err := resolveTables(ctx, conn, cfg)
	if err != nil {
		return cat, err
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return cat, fmt.Errorf("read the server version: %w", err)
	}
	st, err := readSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return cat, err
	}
	if st.exists || version < failoverSlots {
		cat.Notes = append(cat.Notes, "slot "+cfg.Slot+": "+slotFailover(version, st.failover))
	} else {
		cat.Notes = append(cat.Notes, "slot "+cfg.Slot+" (created at first start): "+slotFailover(version, true))
	}
	signalSchema, signalName, _ := strings.Cut(cfg.SignalTable, ".")
	var out []sources.CapturedTable
	for _, t := range tables {
		if t.schema == signalSchema && t.name == signalName {
			continue
		}
		cols, err := tableColumns(ctx, conn, t)
		if err != nil {
			return cat, valueFree(err)
		}
		out = append(out, sources.CapturedTable{Key: sources.KeyInfo{Table: t.qualified(), Columns: t.key, From: t.keyFrom, Why: t.keyWhy}, Columns: cols})
	}
	slices.SortFunc(out, func(a, b sources.CapturedTable) int { return cmp.Compare(a.Key.Table, b.Key.Table) })
	cat.Tables = out
	return cat, nil
}
