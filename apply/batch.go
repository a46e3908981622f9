package apply

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources"
)

// batch is one transaction's events of one partition. Row changes are
// folded per key (the last write wins; an update's unchanged columns keep
// the value an earlier event of the batch gave them) and written table by
// table, deletes first, in a few set-based statements. A truncate or a
// chunk event writes what is folded first, since it reads the table.
type batch struct {
	a      *applier
	tx     pgx.Tx
	p      int
	events uint64 // events applied, including the ones that change nothing
	lastTs int64  // ts_ms of the last event
	tables map[string]*pending
	order  []string
	// chunkKeys are the keys backfill chunks wrote, by chunk id.
	chunkKeys map[string][]string
	// ddl holds the tables this transaction created or altered: they
	// are known to other batches only once it commits.
	ddl map[string]*table
}

// pending is the folded changes of one table.
type pending struct {
	t    *table
	rows map[string]*change // by canonical key
	keys []string           // canonical keys in first-touch order
}

type change struct {
	key     []json.RawMessage
	cols    map[string]json.RawMessage // nil: deleted
	deleted bool                       // deleted before cols were written (delete, then insert)
}

func newBatch(a *applier, tx pgx.Tx, p int) *batch {
	return &batch{a: a, tx: tx, p: p, tables: make(map[string]*pending), chunkKeys: make(map[string][]string), ddl: make(map[string]*table)}
}

// apply folds in one event read from subject.
func (b *batch) apply(ctx context.Context, subject string, data []byte) error {
	b.events++
	var ev consumer.Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("event on %s: %w", subject, err)
	}
	b.lastTs = ev.TsMs
	switch ev.Op {
	case "c", "u", "r", "d", "t", "chunk":
	default:
		return nil // newer kinds of events change no rows
	}
	t, err := b.table(ctx, &ev)
	if err != nil {
		return err
	}
	switch ev.Op {
	case "c", "u", "r":
		return b.upsert(t, &ev)
	case "d":
		return b.delete(t, &ev)
	case "t":
		if err := b.flush(ctx); err != nil {
			return err
		}
		return b.truncate(ctx, t)
	default:
		if err := b.flush(ctx); err != nil {
			return err
		}
		return b.chunk(ctx, t, &ev)
	}
}

func (b *batch) pendingOf(t *table) *pending {
	q := t.qualified()
	pt := b.tables[q]
	if pt == nil || pt.t != t {
		if pt != nil {
			// The table was checked again (a new shape) mid-batch:
			// keep what is folded, under the new description.
			pt.t = t
		} else {
			pt = &pending{t: t, rows: make(map[string]*change)}
			b.tables[q] = pt
			b.order = append(b.order, q)
		}
	}
	return pt
}

func (b *batch) upsert(t *table, ev *consumer.Event) error {
	cols, vals, err := consumer.ParseKey(ev.Key)
	if err != nil {
		return err
	}
	if !slices.Equal(cols, t.key) {
		return fmt.Errorf("%s: the event's key is (%s), the target's (%s)", t.qualified(), strings.Join(cols, ", "), strings.Join(t.key, ", "))
	}
	for c := range ev.After {
		if t.columns[c] == nil {
			return fmt.Errorf("%s has no column %q in the target, which the event carries: add it (apply adds the columns a new shape on the stream announces)", t.qualified(), c)
		}
	}
	canon := consumer.Canonical(vals)
	pt := b.pendingOf(t)
	old := pt.rows[canon]
	ch := &change{key: vals, cols: ev.After}
	if ch.cols == nil {
		ch.cols = map[string]json.RawMessage{}
	}
	if old != nil {
		ch.deleted = old.deleted || old.cols == nil
		if old.cols != nil && len(ev.Unchanged) > 0 {
			ch.cols = maps.Clone(ch.cols)
			for _, c := range ev.Unchanged {
				if v, ok := old.cols[c]; ok {
					ch.cols[c] = v
				}
			}
		}
	} else {
		pt.keys = append(pt.keys, canon)
	}
	pt.rows[canon] = ch
	if ev.Op == "r" && ev.Source.Chunk != "" {
		b.chunkKeys[ev.Source.Chunk] = append(b.chunkKeys[ev.Source.Chunk], canon)
	}
	return nil
}

func (b *batch) delete(t *table, ev *consumer.Event) error {
	_, vals, err := consumer.ParseKey(ev.Key)
	if err != nil {
		return err
	}
	canon := consumer.Canonical(vals)
	pt := b.pendingOf(t)
	if pt.rows[canon] == nil {
		pt.keys = append(pt.keys, canon)
	}
	pt.rows[canon] = &change{key: vals}
	return nil
}

// flush writes the folded changes.
func (b *batch) flush(ctx context.Context) error {
	for _, q := range b.order {
		pt := b.tables[q]
		if err := b.flushTable(ctx, pt); err != nil {
			return err
		}
	}
	clear(b.tables)
	b.order = b.order[:0]
	for chunk, keys := range b.chunkKeys {
		if _, err := b.tx.Exec(ctx, `INSERT INTO sluice.apply_chunk_keys (source, part, chunk, key)
SELECT $1, $2, $3, k FROM unnest($4::text[]) AS k ON CONFLICT DO NOTHING`, b.a.cfg.Source, b.p, chunk, keys); err != nil {
			return fmt.Errorf("record the keys of backfill chunk %s: %w", chunk, err)
		}
	}
	clear(b.chunkKeys)
	return nil
}

func (b *batch) flushTable(ctx context.Context, pt *pending) error {
	t := pt.t
	var dels [][]json.RawMessage
	groups := map[string][]*change{} // upserts by their sorted column list
	for _, k := range pt.keys {
		ch := pt.rows[k]
		if ch.cols == nil || ch.deleted {
			dels = append(dels, ch.key)
		}
		if ch.cols != nil {
			sig := strings.Join(slices.Sorted(maps.Keys(ch.cols)), "\x00")
			groups[sig] = append(groups[sig], ch)
		}
	}
	if len(dels) > 0 {
		if err := b.deleteKeys(ctx, t, dels); err != nil {
			return err
		}
	}
	for _, sig := range slices.Sorted(maps.Keys(groups)) {
		rows := groups[sig]
		cols := slices.Sorted(maps.Keys(rows[0].cols))
		for _, k := range t.key {
			if !slices.Contains(cols, k) {
				cols = append(cols, k) // a key column left out of after
			}
		}
		doc, err := b.rowsJSON(t, rows, cols)
		if err != nil {
			return err
		}
		var sql strings.Builder
		list := identList(cols, "")
		fmt.Fprintf(&sql, "INSERT INTO %s (%s) SELECT %s FROM jsonb_populate_recordset(NULL::%s, $1::jsonb) AS r ON CONFLICT (%s) ",
			t.ident, list, identList(cols, "r."), t.ident, identList(t.key, ""))
		var set []string
		for _, c := range cols {
			if !slices.Contains(t.key, c) {
				q := pgx.Identifier{c}.Sanitize()
				set = append(set, q+" = EXCLUDED."+q)
			}
		}
		if len(set) == 0 {
			sql.WriteString("DO NOTHING")
		} else {
			sql.WriteString("DO UPDATE SET " + strings.Join(set, ", "))
		}
		if _, err := b.tx.Exec(ctx, sql.String(), doc); err != nil {
			return fmt.Errorf("upsert %d rows into %s: %w", len(rows), t.qualified(), err)
		}
	}
	return nil
}

// rowsJSON writes rows as a JSON array of objects for
// jsonb_populate_recordset, with values the way PostgreSQL reads them:
// base64 bytes become bytea's hex form, the rest is taken as sent.
func (b *batch) rowsJSON(t *table, rows []*change, cols []string) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, ch := range rows {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteByte('{')
		for j, c := range cols {
			if j > 0 {
				buf.WriteByte(',')
			}
			buf.Write(sources.AppendJSONString(nil, []byte(c)))
			buf.WriteByte(':')
			v, ok := ch.cols[c]
			if !ok {
				if k := slices.Index(t.key, c); k >= 0 {
					v = ch.key[k]
				} else {
					v = json.RawMessage("null")
				}
			}
			if t.columns[c].typ == "bytea" && len(v) > 0 && v[0] == '"' {
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					return nil, err
				}
				raw, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return nil, fmt.Errorf("%s.%s: value is not base64: %w", t.qualified(), c, err)
				}
				v = json.RawMessage(`"\\x` + hex.EncodeToString(raw) + `"`)
			}
			buf.Write(v)
		}
		buf.WriteByte('}')
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// deleteKeys deletes the rows of the given keys (values as in events).
func (b *batch) deleteKeys(ctx context.Context, t *table, keys [][]json.RawMessage) error {
	for len(keys) > 0 {
		n := min(len(keys), 5000)
		buf := []byte{'['}
		for i, k := range keys[:n] {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendObject(buf, t.key, k)
		}
		buf = append(buf, ']')
		sql := fmt.Sprintf("DELETE FROM %s WHERE (%s) IN (SELECT %s FROM jsonb_populate_recordset(NULL::%s, $1::jsonb) AS r)",
			t.ident, identList(t.key, ""), identList(t.key, "r."), t.ident)
		if _, err := b.tx.Exec(ctx, sql, buf); err != nil {
			return fmt.Errorf("delete %d rows from %s: %w", n, t.qualified(), err)
		}
		keys = keys[n:]
	}
	return nil
}

// truncate applies a truncate as it arrives on this partition: it deletes
// the table's rows whose key hashes to the partition, and no others,
// whose own truncate comes in their partition's order.
func (b *batch) truncate(ctx context.Context, t *table) error {
	gone, err := b.partitionKeys(ctx, t, "", nil, func([]json.RawMessage, string) (bool, error) { return true, nil })
	if err != nil {
		return err
	}
	return b.deleteKeys(ctx, t, gone)
}

// chunk applies a chunk event (DESIGN.md "Checkpoints, outages and
// backfill"): the rows of its range on this partition that the chunk did
// not write and its keep list does not name are gone from the source.
func (b *batch) chunk(ctx context.Context, t *table, ev *consumer.Event) error {
	ch := ev.Chunk
	if ch == nil {
		return fmt.Errorf("%s: chunk event without a chunk object", t.qualified())
	}
	id := ch.ID
	if id == "" {
		id = ev.Source.Chunk
	}
	if id == "" {
		return fmt.Errorf("%s: chunk event without an id", t.qualified())
	}
	rows, err := b.tx.Query(ctx, `SELECT key FROM sluice.apply_chunk_keys WHERE source = $1 AND part = $2 AND chunk = $3`, b.a.cfg.Source, b.p, id)
	if err != nil {
		return fmt.Errorf("read the keys of backfill chunk %s: %w", id, err)
	}
	emitted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read the keys of backfill chunk %s: %w", id, err)
	}
	spared := make(map[string]bool, len(emitted))
	for _, k := range emitted {
		spared[k] = true
	}
	where, args, err := b.rangeCondition(t, ch)
	if err != nil {
		return err
	}
	gone, err := b.partitionKeys(ctx, t, where, args, func(key []json.RawMessage, canon string) (bool, error) {
		if spared[canon] {
			return false, nil
		}
		return consumer.InChunk(key, ch)
	})
	if err != nil {
		return fmt.Errorf("backfill chunk %s: %w", id, err)
	}
	if err := b.deleteKeys(ctx, t, gone); err != nil {
		return err
	}
	if _, err := b.tx.Exec(ctx, `DELETE FROM sluice.apply_chunk_keys WHERE source = $1 AND part = $2 AND chunk = $3`, b.a.cfg.Source, b.p, id); err != nil {
		return fmt.Errorf("forget the keys of backfill chunk %s: %w", id, err)
	}
	return nil
}

// rangeCondition is SQL selecting the keys from..to of a chunk, in the
// order chunks are read: text bytewise (COLLATE "C"), numbers
// numerically, composite keys lexicographically. Bounds are bound as JSON
// and read into the table's own types.
func (b *batch) rangeCondition(t *table, ch *consumer.ChunkRange) (string, []any, error) {
	lhs := make([]string, len(t.key))
	rhs := make([]string, len(t.key))
	for i, k := range t.key {
		q := pgx.Identifier{k}.Sanitize()
		lhs[i], rhs[i] = q, "b."+q
		if collatable(t.columns[k].typ) {
			lhs[i] += ` COLLATE "C"`
			rhs[i] += ` COLLATE "C"`
		}
	}
	var conds []string
	var args []any
	for _, bound := range []struct {
		vals []json.RawMessage
		op   string
	}{{ch.From, ">="}, {ch.To, "<="}} {
		if bound.vals == nil {
			continue
		}
		if len(bound.vals) != len(t.key) {
			return "", nil, fmt.Errorf("chunk bound has %d values, the key %d columns", len(bound.vals), len(t.key))
		}
		args = append(args, appendObject(nil, t.key, bound.vals))
		conds = append(conds, fmt.Sprintf("(%s) %s (SELECT %s FROM jsonb_populate_record(NULL::%s, $%d::jsonb) AS b)",
			strings.Join(lhs, ", "), bound.op, strings.Join(rhs, ", "), t.ident, len(args)))
	}
	return strings.Join(conds, " AND "), args, nil
}

func collatable(typ string) bool {
	switch typ {
	case "text", "varchar", "bpchar", "name":
		return true
	}
	return false
}

// partitionKeys returns the keys of t (matching where) that hash to this
// batch's partition and that keep accepts. Keys are rebuilt as the events
// write them from the target's text of each key column, which only some
// kinds allow.
func (b *batch) partitionKeys(ctx context.Context, t *table, where string, args []any,
	keep func(key []json.RawMessage, canon string) (bool, error)) ([][]json.RawMessage, error) {
	sel := make([]string, len(t.key))
	for i, k := range t.key {
		c := t.columns[k]
		switch {
		case c.typ == "bpchar":
			// char(n) loses its padding in text, which the events keep.
			return nil, fmt.Errorf("%s: key column %s is char(n), whose values lose their padding as text: apply cannot rebuild its keys "+
				"to find a partition's rows (truncates and backfill deletes need it); make the target column text or varchar", t.qualified(), k)
		case c.kind == sources.KindInteger, c.kind == sources.KindDecimal, c.kind == sources.KindString, c.kind == sources.KindUUID, c.kind == sources.KindDate:
		default:
			return nil, fmt.Errorf("%s: key column %s is %s: apply cannot rebuild such keys to find a partition's rows "+
				"(truncates and backfill deletes need it); keys of integers, decimals, text, uuids and dates work", t.qualified(), k, c.typ)
		}
		sel[i] = pgx.Identifier{k}.Sanitize() + "::text"
	}
	sql := fmt.Sprintf("SELECT %s FROM %s", strings.Join(sel, ", "), t.ident)
	if where != "" {
		sql += " WHERE " + where
	}
	rows, err := b.tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read the keys of %s: %w", t.qualified(), err)
	}
	defer rows.Close()
	var out [][]json.RawMessage
	texts := make([]string, len(t.key))
	dest := make([]any, len(t.key))
	for i := range texts {
		dest[i] = &texts[i]
	}
	var canon []byte
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("read the keys of %s: %w", t.qualified(), err)
		}
		key := make([]json.RawMessage, len(t.key))
		for i, k := range t.key {
			if t.columns[k].kind == sources.KindInteger {
				key[i] = json.RawMessage(texts[i])
			} else {
				key[i] = sources.AppendJSONString(nil, []byte(texts[i]))
			}
		}
		canon = append(canon[:0], consumer.Canonical(key)...)
		if sink.Partition(canon, b.a.cfg.Partitions) != b.p {
			continue
		}
		ok, err := keep(key, string(canon))
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, key)
		}
	}
	return out, rows.Err()
}

// committed makes the tables this transaction created or altered known.
func (b *batch) committed() {
	for name := range b.ddl {
		// Read again at next use: the cache holds only committed shapes.
		b.a.setTable(name, nil)
	}
}

// appendObject appends the JSON object of columns cols with values vals.
func appendObject(dst []byte, cols []string, vals []json.RawMessage) []byte {
	dst = append(dst, '{')
	for i, c := range cols {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = sources.AppendJSONString(dst, []byte(c))
		dst = append(dst, ':')
		dst = append(dst, vals[i]...)
	}
	return append(dst, '}')
}

func identList(cols []string, prefix string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = prefix + pgx.Identifier{c}.Sanitize()
	}
	return strings.Join(out, ", ")
}
