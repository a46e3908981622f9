package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
)

// relation decodes the rows of one table as pgoutput describes it. It is
// built once per Relation message and reused for every row.
type relation struct {
	table    *sources.Table // nil when the table is not captured
	decoders []valueDecoder
	identity []bool // column belongs to the replica identity
	// msg and gen: what pgoutput sent, and Source.tablesGen when it was
	// read, for a relation not captured then.
	msg *pglogrepl.RelationMessage
	gen uint64
}

// relation builds the decoder for a Relation message of a captured table.
func (s *Source) relation(ctx context.Context, m *pglogrepl.RelationMessage) (*relation, error) {
	qn := m.Namespace + "." + m.RelationName
	gen := s.tablesGen.Load()
	info, ok := s.captured(qn)
	if !ok {
		return &relation{msg: m, gen: gen}, nil
	}
	rel := &relation{
		decoders: make([]valueDecoder, len(m.Columns)),
		identity: make([]bool, len(m.Columns)),
	}
	shape := &sources.Table{Schema: m.Namespace, Name: m.RelationName}
	lookup := s.typeLookup(ctx, s.conn)
	for i, c := range m.Columns {
		dec, err := newDecoder(c.DataType, lookup)
		if err != nil {
			return nil, fmt.Errorf("table %s column %s: %w", qn, c.Name, err)
		}
		rel.decoders[i] = dec
		rel.identity[i] = c.Flags&1 != 0
		shape.Columns = append(shape.Columns, c.Name)
		typ := s.typeName(c.DataType, lookup)
		shape.Types = append(shape.Types, typ)
		shape.Kinds = append(shape.Kinds, valueKind(typ))
	}
	shape.NotNull = notNull(ctx, s.conn, m.RelationID, shape.Columns)
	table, err := s.register(shape, info.key)
	if err != nil {
		return nil, err
	}
	rel.table = table
	return rel, nil
}

// register sets the key of a shape read from the log or by a backfill and
// returns the Table to use: the same shape keeps its Table (and schema
// version), a new one bumps it. The stream and the backfill runner share
// the shapes, so a backfill row and a logged change of one shape carry one
// version.
func (s *Source) register(shape *sources.Table, key []string) (*sources.Table, error) {
	qn := shape.QualifiedName()
	for _, k := range key {
		i := slices.Index(shape.Columns, k)
		if i < 0 {
			return nil, fmt.Errorf("table %s: key column %s is not in the replicated row (was it dropped or renamed?)", qn, k)
		}
		shape.Key = append(shape.Key, i)
	}
	s.shapeMu.Lock()
	defer s.shapeMu.Unlock()
	prev := s.shapes[qn]
	if prev != nil && slices.Equal(prev.Columns, shape.Columns) && slices.Equal(prev.Types, shape.Types) &&
		slices.Equal(prev.Key, shape.Key) && slices.Equal(prev.NotNull, shape.NotNull) {
		return prev, nil
	}
	shape.Version = 1
	if prev != nil {
		shape.Version = prev.Version + 1
	}
	s.shapes[qn] = shape
	return shape, nil
}

// typeLookup resolves types that are not built in (enums, domains, arrays
// of them) from the catalog.
func (s *Source) typeLookup(ctx context.Context, conn *pgx.Conn) func(uint32) (pgType, bool) {
	return func(oid uint32) (pgType, bool) {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var t pgType
		var kind, delim string
		err := conn.QueryRow(qctx, `SELECT oid, typname, typtype::text, typelem, typbasetype, typdelim::text FROM pg_type WHERE oid = $1`, oid).
			Scan(&t.OID, &t.Name, &kind, &t.Elem, &t.Base, &delim)
		if err != nil {
			if !errors.Is(err, pgx.ErrNoRows) {
				s.cfg.Log.Warn("cannot look up a column type; its values are sent as text", "oid", oid, "error", err)
			}
			return pgType{}, false
		}
		t.Kind, t.Delim = kind[0], delim[0]
		return t, true
	}
}

func (s *Source) typeName(oid uint32, lookup func(uint32) (pgType, bool)) string {
	if t, ok := s.builtin.TypeForOID(oid); ok {
		return t.Name
	}
	if t, ok := lookup(oid); ok {
		return t.Name
	}
	return fmt.Sprintf("oid:%d", oid)
}

// decode turns a tuple into values aligned with the table's columns.
// before supplies unchanged TOASTed values when the old row carries them;
// otherwise such a value stays nil, which the event lists as "unchanged"
// rather than writing a false null. keyOnly marks an old tuple that holds
// only the replica identity: its other columns are absent, not NULL.
func (rel *relation) decode(t *pglogrepl.TupleData, before []sources.Value, keyOnly bool) ([]sources.Value, error) {
	if t == nil {
		return nil, nil
	}
	if len(t.Columns) != len(rel.decoders) {
		return nil, fmt.Errorf("table %s: row has %d columns, its relation %d", rel.table.QualifiedName(), len(t.Columns), len(rel.decoders))
	}
	vals := make([]sources.Value, len(t.Columns))
	// All values of a row share one buffer: one allocation per row, not per value.
	ends := make([]int, len(t.Columns))
	var buf []byte
	for i, c := range t.Columns {
		switch c.DataType {
		case pglogrepl.TupleDataTypeText:
			var err error
			if buf, err = rel.decoders[i](buf, c.Data); err != nil {
				return nil, fmt.Errorf("table %s column %s: %w", rel.table.QualifiedName(), rel.table.Columns[i], err)
			}
		case pglogrepl.TupleDataTypeNull:
			if !keyOnly || rel.identity[i] {
				buf = append(buf, "null"...)
			}
		case pglogrepl.TupleDataTypeToast:
			// Left empty: filled from before below, or reported unchanged.
		default:
			return nil, fmt.Errorf("table %s column %s: unexpected tuple data type %q", rel.table.QualifiedName(), rel.table.Columns[i], c.DataType)
		}
		ends[i] = len(buf)
	}
	startAt := 0
	for i, end := range ends {
		if end > startAt {
			vals[i] = buf[startAt:end:end]
		} else if t.Columns[i].DataType == pglogrepl.TupleDataTypeToast && before != nil {
			vals[i] = before[i]
		}
		startAt = end
	}
	return vals, nil
}

// notNull reads which columns are declared NOT NULL now; a column the
// catalog no longer has (the log is behind it) counts as nullable.
func notNull(ctx context.Context, conn *pgx.Conn, relation uint32, columns []string) []bool {
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := conn.Query(qctx, `SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped`, relation)
	if err != nil {
		return nil
	}
	declared := map[string]bool{}
	for rows.Next() {
		var name string
		var nn bool
		if rows.Scan(&name, &nn) == nil {
			declared[name] = nn
		}
	}
	if rows.Err() != nil {
		return nil
	}
	out := make([]bool, len(columns))
	for i, c := range columns {
		out[i] = declared[c]
	}
	return out
}
