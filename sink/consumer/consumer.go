// Package consumer is sluice's reference consumer: it applies change
// events, backfill rows and chunk events to an in-memory copy of each table,
// following the rule of DESIGN.md ("Checkpoints, outages and backfill"), so
// the copy converges on the source even when rows were deleted while the
// log was gone. Go consumers can import it; README ("Consuming: applying
// events, backfills and chunk events") states the same rule for other
// languages. RunGroup shares a source's partitions between the members of
// a consumer group (README "Consumer groups").
package consumer

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"math/big"
	"slices"
	"strings"

	"github.com/google/btree"
)

// Event is the part of a sluice event a consumer needs.
type Event struct {
	Op string `json:"op"`
	// Key is the key object as sent; its column order is the key order,
	// which a Go map would lose, so it stays raw.
	Key       json.RawMessage            `json:"key"`
	After     map[string]json.RawMessage `json:"after"`
	Unchanged []string                   `json:"unchanged"`
	Source    struct {
		Name     string `json:"name"`
		Schema   string `json:"schema"`
		Table    string `json:"table"`
		Snapshot bool   `json:"snapshot"`
		Chunk    string `json:"chunk"`
	} `json:"source"`
	Chunk *ChunkRange `json:"chunk"`
	// SchemaVersion is the version of the table shape the row has.
	SchemaVersion int `json:"schema_version"`
	// TsMs is when sluice published the event, in Unix milliseconds.
	TsMs int64 `json:"ts_ms"`
}

// ChunkRange is the body of a chunk event. Nil From or To is an open end.
type ChunkRange struct {
	ID   string              `json:"id"`
	From []json.RawMessage   `json:"from"`
	To   []json.RawMessage   `json:"to"`
	Keep [][]json.RawMessage `json:"keep"`
}

// TableName names a table of one source. The source is part of the name
// so that one View can follow several sources (e.g. tail 'cdc.>') whose
// schemas and tables share names.
type TableName struct {
	Source string // source.name
	Schema string // source.schema (MySQL: the database)
	Table  string // source.table
}

// Qualified returns "schema.table".
func (t TableName) Qualified() string { return t.Schema + "." + t.Table }

func compareTableNames(a, b TableName) int {
	if c := strings.Compare(a.Source, b.Source); c != 0 {
		return c
	}
	if c := strings.Compare(a.Schema, b.Schema); c != 0 {
		return c
	}
	return strings.Compare(a.Table, b.Table)
}

// Row is a materialized row. Treat it as read-only: the View replaces rows
// rather than mutating them, so a Row obtained earlier stays a consistent
// snapshot.
type Row struct {
	KeyColumns []string          // key column names, in key order
	Key        []json.RawMessage // key values, aligned with KeyColumns
	// Columns holds the row's values as in the events. A column an update
	// marked unchanged before the view knew its value is absent.
	Columns map[string]json.RawMessage
	// Partition is the last subject token of the event that last wrote the
	// row. Truncates and chunk events arrive once per partition and act
	// only on their own partition's rows, which is how the view follows
	// them without knowing the partition count.
	Partition string
	// Chunk is the backfill chunk whose op "r" last wrote the row, or ""
	// when the last write came from the log.
	Chunk string

	canonical string
	// ints is the key as integers when every key value is one (most
	// keys): a chunk event compares it against its bounds for every row
	// of its partition, without parsing the key again.
	ints []int64
}

// CanonicalKey returns the key's canonical encoding (DESIGN.md "Subjects
// and partitions"), e.g. [42] or ["eu",7].
func (r *Row) CanonicalKey() string { return r.canonical }

// View is the materialized state of every table seen. It is not safe for
// concurrent use.
type View struct {
	tables map[TableName]map[string]*Row // rows by canonical key
	// parts indexes the same rows by partition, so that a truncate or a
	// chunk event looks only at its own partition's rows.
	parts map[TableName]map[string]*partition
}

// partition is the rows of one table on one partition, by canonical key,
// and those whose key is all integers in key order too: a chunk event
// finds the rows of its range without looking at every row, which would
// make a backfill's chunk events quadratic in the table's size.
type partition struct {
	rows map[string]*Row
	// ints orders the rows whose key is all integers (Row.ints), others
	// holds the rest.
	ints   *btree.BTreeG[*Row]
	others map[string]*Row
}

func newPartition() *partition {
	return &partition{rows: make(map[string]*Row), others: make(map[string]*Row),
		ints: btree.NewG(32, func(a, b *Row) bool { return slices.Compare(a.ints, b.ints) < 0 })}
}

func (p *partition) put(row *Row) {
	p.delete(row.canonical)
	p.rows[row.canonical] = row
	if row.ints != nil {
		p.ints.ReplaceOrInsert(row)
	} else {
		p.others[row.canonical] = row
	}
}

func (p *partition) delete(canon string) {
	if p == nil {
		return
	}
	if old := p.rows[canon]; old != nil {
		if old.ints != nil {
			p.ints.Delete(old)
		}
		delete(p.others, canon)
		delete(p.rows, canon)
	}
}

// NewView returns an empty view.
func NewView() *View {
	return &View{tables: make(map[TableName]map[string]*Row), parts: make(map[TableName]map[string]*partition)}
}

func (v *View) put(name TableName, row *Row) {
	rows := v.tables[name]
	if rows == nil {
		rows = make(map[string]*Row)
		v.tables[name] = rows
	}
	if old := rows[row.canonical]; old != nil && old.Partition != row.Partition {
		v.parts[name][old.Partition].delete(row.canonical)
	}
	rows[row.canonical] = row
	parts := v.parts[name]
	if parts == nil {
		parts = make(map[string]*partition)
		v.parts[name] = parts
	}
	part := parts[row.Partition]
	if part == nil {
		part = newPartition()
		parts[row.Partition] = part
	}
	part.put(row)
}

func (v *View) remove(name TableName, canon string) {
	if old := v.tables[name][canon]; old != nil {
		v.parts[name][old.Partition].delete(canon)
		delete(v.tables[name], canon)
	}
}

// Len returns the number of rows of every table.
func (v *View) Len() int {
	n := 0
	for _, rows := range v.tables {
		n += len(rows)
	}
	return n
}

// Tables returns the tables holding at least one row, sorted by source,
// schema and table.
func (v *View) Tables() []TableName {
	var names []TableName
	for name, rows := range v.tables {
		if len(rows) > 0 {
			names = append(names, name)
		}
	}
	slices.SortFunc(names, compareTableNames)
	return names
}

// Lookup returns the row of table t whose canonical key is key.
func (v *View) Lookup(t TableName, key string) (*Row, bool) {
	r, ok := v.tables[t][key]
	return r, ok
}

// Rows returns the rows of table t sorted by the bytes of their canonical
// key. Byte order rather than key order keeps the output independent of
// the key's types, so any language reproduces it.
func (v *View) Rows(t TableName) []*Row {
	rows := make([]*Row, 0, len(v.tables[t]))
	for _, r := range v.tables[t] {
		rows = append(rows, r)
	}
	slices.SortFunc(rows, func(a, b *Row) int { return strings.Compare(a.canonical, b.canonical) })
	return rows
}

// All yields every row, tables in the order of Tables, rows in the order
// of Rows.
func (v *View) All() iter.Seq2[TableName, *Row] {
	return func(yield func(TableName, *Row) bool) {
		for _, t := range v.Tables() {
			for _, r := range v.Rows(t) {
				if !yield(t, r) {
					return
				}
			}
		}
	}
}

// Apply applies one event as read from subject, whose last token is the
// event's partition. Unknown ops change nothing, so newer sluice versions
// may add kinds of events without breaking consumers. On error the view is
// unchanged.
func (v *View) Apply(subject string, data []byte) error {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return fmt.Errorf("event on %s: %w", subject, err)
	}
	if err := v.ApplyEvent(partitionToken(subject), &ev); err != nil {
		return fmt.Errorf("%s event on %s: %w", ev.Op, subject, err)
	}
	return nil
}

// ApplyEvent applies a decoded event that arrived on partition (the last
// token of its subject).
func (v *View) ApplyEvent(partition string, ev *Event) error {
	name := TableName{Source: ev.Source.Name, Schema: ev.Source.Schema, Table: ev.Source.Table}
	switch ev.Op {
	case "c", "u", "r":
		cols, vals, err := orderedKey(ev.Key)
		if err != nil {
			return err
		}
		canon := canonical(vals)
		rows := v.tables[name]
		row := &Row{KeyColumns: cols, Key: vals, Columns: make(map[string]json.RawMessage, len(ev.After)+len(ev.Unchanged)),
			Partition: partition, canonical: canon, ints: intKey(vals)}
		for c, val := range ev.After {
			row.Columns[c] = val
		}
		if old := rows[canon]; old != nil {
			for _, c := range ev.Unchanged {
				if val, ok := old.Columns[c]; ok {
					row.Columns[c] = val
				}
			}
		}
		if ev.Op == "r" {
			// The chunk event spares exactly the rows its chunk emitted;
			// any later write from the log clears the mark.
			row.Chunk = ev.Source.Chunk
		}
		v.put(name, row)
	case "d":
		_, vals, err := orderedKey(ev.Key)
		if err != nil {
			return err
		}
		v.remove(name, canonical(vals))
	case "t":
		// Published once on every partition: each copy clears the rows
		// of its own partition, in that partition's order.
		if p := v.parts[name][partition]; p != nil {
			for k := range p.rows {
				v.remove(name, k)
			}
		}
	case "chunk":
		return v.applyChunk(name, partition, ev)
	default:
		// Unknown ops (e.g. future schema events) change no rows.
	}
	return nil
}

// applyChunk deletes the rows of the chunk's range on this partition that
// the chunk neither emitted nor kept: they are gone from the source.
func (v *View) applyChunk(name TableName, partition string, ev *Event) error {
	ch := ev.Chunk
	if ch == nil {
		return errors.New("no chunk object")
	}
	id := ch.ID
	if id == "" {
		id = ev.Source.Chunk
	}
	if id == "" {
		// Log-written rows carry no chunk id: an empty id would spare them all.
		return errors.New("chunk without an id")
	}
	keep := make(map[string]bool, len(ch.Keep))
	for _, k := range ch.Keep {
		keep[canonical(k)] = true
	}
	// Decide every deletion before making any, so that an error leaves
	// the view as it was.
	var gone []string
	part := v.parts[name][partition]
	if part == nil {
		return nil
	}
	consider := func(k string, row *Row) error {
		if row.Chunk == id || keep[k] {
			return nil
		}
		in, err := inRange(row.Key, ch.From, ch.To)
		if err == nil && in {
			var kept bool
			if kept, err = inKeep(row.Key, ch.Keep); err == nil && !kept {
				gone = append(gone, k)
			}
		}
		if err != nil {
			return fmt.Errorf("chunk %s, key %s: %w", id, k, err)
		}
		return nil
	}
	// Every row is looked at, unless the bounds are integers: then the
	// integer-keyed rows of the range come from the ordered index, and
	// only the few others are looked at each.
	scan := part.rows
	from, to := intKey(ch.From), intKey(ch.To)
	if (ch.From == nil || from != nil) && (ch.To == nil || to != nil) {
		scan = part.others
		var err error
		visit := func(row *Row) bool {
			if len(row.ints) != len(ch.From) && ch.From != nil || len(row.ints) != len(ch.To) && ch.To != nil {
				err = consider(row.canonical, row) // CompareKeys names the mismatch
				return err == nil
			}
			if ch.To != nil && slices.Compare(row.ints, to) > 0 {
				return false
			}
			err = consider(row.canonical, row)
			return err == nil
		}
		if ch.From == nil {
			part.ints.Ascend(visit)
		} else {
			part.ints.AscendGreaterOrEqual(&Row{ints: from}, visit)
		}
		if err != nil {
			return err
		}
	}
	for k, row := range scan {
		if err := consider(k, row); err != nil {
			return err
		}
	}
	for _, k := range gone {
		v.remove(name, k)
	}
	return nil
}

// ParseKey reads an event's key object: its columns and values in key
// order.
func ParseKey(raw json.RawMessage) (cols []string, vals []json.RawMessage, err error) {
	return orderedKey(raw)
}

// Canonical returns the canonical encoding of key values as the events
// write them (DESIGN.md "Subjects and partitions"), e.g. [42] or ["eu",7].
func Canonical(vals []json.RawMessage) string { return canonical(vals) }

// InChunk tells whether a key falls under a chunk event's rule: inside
// its range and not in its keep list. (Whether the chunk emitted it, and
// its partition, are the caller's to check.)
func InChunk(key []json.RawMessage, ch *ChunkRange) (bool, error) {
	in, err := inRange(key, ch.From, ch.To)
	if err != nil || !in {
		return false, err
	}
	kept, err := inKeep(key, ch.Keep)
	return !kept, err
}

// inKeep matches keep entries by key order as well as by text, so a keep
// key written as a number still matches a numeric key sent as a decimal
// string.
func inKeep(key []json.RawMessage, keep [][]json.RawMessage) (bool, error) {
	for _, k := range keep {
		c, err := CompareKeys(key, k)
		if err != nil {
			return false, err
		}
		if c == 0 {
			return true, nil
		}
	}
	return false, nil
}

func partitionToken(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// orderedKey reads a key object keeping its column order, which is the
// order of the canonical encoding.
func orderedKey(raw json.RawMessage) ([]string, []json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, fmt.Errorf("key %s is not an object", raw)
	}
	var (
		cols []string
		vals []json.RawMessage
	)
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("key %s: %w", raw, err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, fmt.Errorf("key %s: %w", raw, err)
		}
		cols = append(cols, t.(string))
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		return nil, nil, fmt.Errorf("key %s has no column", raw)
	}
	return cols, vals, nil
}

// canonical writes key values as the JSON array the partitioner hashes.
// Values are taken as sent, so the text equals sluice's own encoding.
func canonical(vals []json.RawMessage) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range vals {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(v)
	}
	b.WriteByte(']')
	return b.String()
}

// inRange tells whether from ≤ key ≤ to, nil bounds being open.
func inRange(key, from, to []json.RawMessage) (bool, error) {
	if from != nil {
		c, err := CompareKeys(key, from)
		if err != nil || c < 0 {
			return false, err
		}
	}
	if to != nil {
		c, err := CompareKeys(key, to)
		if err != nil || c > 0 {
			return false, err
		}
	}
	return true, nil
}

// CompareKeys orders a key against a chunk bound (or a keep entry), column
// by column, the first difference deciding. The bound's JSON type says how
// a column compares, because a key's numeric value arrives as a decimal
// string that bytewise order would misplace ("9.5" > "10"):
//
//   - bound value a JSON number: numerically, exactly; the key value may be
//     a number or a decimal string ("12.50"), and the strings "-Infinity",
//     "Infinity" and "NaN" sort before, after and after every number, in
//     PostgreSQL's order;
//   - bound value a JSON string: the decoded strings bytewise (UTF-8 bytes,
//     as COLLATE "C" and binary collations order them);
//   - bound value true/false: false < true.
//
// It returns -1, 0 or +1, or an error when the key's value does not have
// the bound's type or the column counts differ.
func CompareKeys(key, bound []json.RawMessage) (int, error) {
	if len(key) != len(bound) {
		return 0, fmt.Errorf("key has %d columns, the bound %d", len(key), len(bound))
	}
	for i := range key {
		c, err := compareValue(key[i], bound[i])
		if err != nil || c != 0 {
			return c, err
		}
	}
	return 0, nil
}

func compareValue(v, bound json.RawMessage) (int, error) {
	b := bytes.TrimSpace(bound)
	if len(b) == 0 {
		return 0, errors.New("empty bound value")
	}
	// Fast paths, for a chunk event is checked against many rows: small
	// integers, and strings without escapes (whose bytes are the text).
	if x, ok := smallInt(v); ok {
		if y, ok := smallInt(b); ok {
			return cmp.Compare(x, y), nil
		}
	}
	if x, ok := plainString(v); ok {
		if y, ok := plainString(b); ok {
			return bytes.Compare(x, y), nil
		}
	}
	switch {
	case b[0] == '"':
		var x, y string
		if err := json.Unmarshal(v, &x); err != nil {
			return 0, fmt.Errorf("key value %s is not a string like its bound %s", v, bound)
		}
		if err := json.Unmarshal(b, &y); err != nil {
			return 0, err
		}
		return strings.Compare(x, y), nil
	case b[0] == 't' || b[0] == 'f':
		var x, y bool
		if err := json.Unmarshal(v, &x); err != nil {
			return 0, fmt.Errorf("key value %s is not a boolean like its bound %s", v, bound)
		}
		if err := json.Unmarshal(b, &y); err != nil {
			return 0, err
		}
		switch {
		case x == y:
			return 0, nil
		case !x:
			return -1, nil
		}
		return 1, nil
	}
	xr, x, err := number(v)
	if err != nil {
		return 0, err
	}
	yr, y, err := number(b)
	if err != nil {
		return 0, err
	}
	if xr != yr || xr != rankFinite {
		return cmp.Compare(xr, yr), nil
	}
	return x.Cmp(y), nil
}

// Ranks of numeric values, in PostgreSQL's numeric order.
const (
	rankNegInf = iota
	rankFinite
	rankPosInf
	rankNaN
)

// number reads a JSON number or a decimal string exactly.
func number(v json.RawMessage) (int, *big.Rat, error) {
	s := string(bytes.TrimSpace(v))
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(v, &s); err != nil {
			return 0, nil, err
		}
		switch s {
		case "-Infinity":
			return rankNegInf, nil, nil
		case "Infinity":
			return rankPosInf, nil, nil
		case "NaN":
			return rankNaN, nil, nil
		}
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return 0, nil, fmt.Errorf("key value %s is not a number like its bound", v)
	}
	return rankFinite, r, nil
}

// smallInt reads a JSON integer of at most 18 digits.
func smallInt(v []byte) (int64, bool) {
	neg := len(v) > 0 && v[0] == '-'
	if neg {
		v = v[1:]
	}
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// intKey is a key's values as integers, nil unless every one is a small
// integer (as smallInt reads it) written as JSON writes it, so that two
// keys have the same integers only if they are the same key.
func intKey(key []json.RawMessage) []int64 {
	if len(key) == 0 {
		return nil
	}
	ints := make([]int64, len(key))
	for i, v := range key {
		v = bytes.TrimSpace(v)
		if digits := bytes.TrimPrefix(v, []byte("-")); len(digits) > 1 && digits[0] == '0' || string(v) == "-0" {
			return nil
		}
		n, ok := smallInt(v)
		if !ok {
			return nil
		}
		ints[i] = n
	}
	return ints
}

// plainString returns the bytes of a JSON string that has no escapes.
func plainString(v []byte) ([]byte, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false
	}
	body := v[1 : len(v)-1]
	if bytes.IndexByte(body, '\\') >= 0 {
		return nil, false
	}
	return body, true
}
