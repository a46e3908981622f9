package sink

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// Encoder writes the Debezium-compatible event envelope of DESIGN.md ("The
// event"). It precomputes everything that depends only on the table shape,
// so encoding an event is appends into a reused buffer.
type Encoder struct {
	sourceJSON string // `"name":"pg1","kind":"postgres","db":"shop",`
	tables     map[*sources.Table]*tableCodec
}

// tableCodec holds the precomputed pieces of one table shape.
type tableCodec struct {
	fields   [][]byte // `"col":` per column
	names    [][]byte // `"col"` per column
	sourceID []byte   // `"schema":"public","table":"orders",`
	version  []byte   // `,"schema_version":3`
	// size is the length of this shape's last event: the next one's
	// buffer is made that large and more, so it is one allocation
	// instead of a doubling from nothing per event (a third of all the
	// bytes a catch-up allocated).
	size int
}

// NewEncoder returns an encoder for events of one source.
func NewEncoder(source, kind, db string) *Encoder {
	b := []byte(`"name":`)
	b = appendQuoted(b, source)
	b = append(b, `,"kind":`...)
	b = appendQuoted(b, kind)
	b = append(b, `,"db":`...)
	b = appendQuoted(b, db)
	b = append(b, ',')
	return &Encoder{sourceJSON: string(b), tables: make(map[*sources.Table]*tableCodec)}
}

func (e *Encoder) codec(t *sources.Table) *tableCodec {
	if tc, ok := e.tables[t]; ok {
		return tc
	}
	tc := &tableCodec{}
	for _, c := range t.Columns {
		n := appendQuoted(nil, c)
		tc.names = append(tc.names, n)
		tc.fields = append(tc.fields, append(append([]byte{}, n...), ':'))
	}
	tc.sourceID = append(appendQuoted([]byte(`"schema":`), t.Schema), `,"table":`...)
	tc.sourceID = append(appendQuoted(tc.sourceID, t.Name), ',')
	tc.version = strconv.AppendInt([]byte(`,"schema_version":`), int64(t.Version), 10)
	e.tables[t] = tc
	return tc
}

// Event returns the JSON event of c in a buffer of its own, which the
// caller may keep (a publisher holds it until JetStream stores it).
func (e *Encoder) Event(c *sources.Change, now time.Time) []byte {
	tc := e.codec(c.Table)
	data := e.appendEvent(make([]byte, 0, tc.size+tc.size/4+64), tc, c, now)
	tc.size = len(data)
	return data
}

// AppendEvent appends the JSON event of c to dst. now is the event's ts_ms
// (when sluice produced it); the source's commit time is source.ts_ms.
func (e *Encoder) AppendEvent(dst []byte, c *sources.Change, now time.Time) []byte {
	return e.appendEvent(dst, e.codec(c.Table), c, now)
}

// appendEvent is AppendEvent with the shape's codec looked up.
func (e *Encoder) appendEvent(dst []byte, tc *tableCodec, c *sources.Change, now time.Time) []byte {
	dst = append(dst, `{"op":"`...)
	dst = append(dst, c.Op...)
	dst = append(dst, `","key":`...)
	if c.Op == sources.OpTruncate {
		dst = append(dst, "null"...)
	} else {
		row := c.After
		if row == nil {
			row = c.Before
		}
		dst = append(dst, '{')
		for i, col := range c.Table.Key {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, tc.fields[col]...)
			dst = append(dst, row[col]...)
		}
		dst = append(dst, '}')
	}
	dst = append(dst, `,"before":`...)
	dst = appendRow(dst, tc, c.Before)
	dst = append(dst, `,"after":`...)
	dst = appendRow(dst, tc, c.After)
	dst = appendUnchanged(dst, tc, c.After)
	dst = append(dst, `,"source":{`...)
	dst = append(dst, e.sourceJSON...)
	dst = append(dst, tc.sourceID...)
	dst = append(dst, `"pos":`...)
	// Positions are printable ASCII by contract (LSNs, GTID sets, file:pos).
	dst = append(dst, '"')
	dst = append(dst, c.Pos...)
	dst = append(dst, '"')
	dst = append(dst, `,"txid":`...)
	dst = strconv.AppendUint(dst, c.TxID, 10)
	dst = append(dst, `,"ts_ms":`...)
	dst = strconv.AppendInt(dst, c.CommitTime.UnixMilli(), 10)
	if c.Chunk != "" {
		dst = append(dst, `,"snapshot":true,"chunk":`...)
		dst = appendQuoted(dst, c.Chunk)
		dst = append(dst, '}')
	} else {
		dst = append(dst, `,"snapshot":false}`...)
	}
	dst = append(dst, tc.version...)
	dst = append(dst, `,"ts_ms":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli(), 10)
	return append(dst, '}')
}

// appendRow writes a row image as an object in column order. Columns whose
// value the source did not provide are left out, never written as null.
func appendRow(dst []byte, tc *tableCodec, row []sources.Value) []byte {
	if row == nil {
		return append(dst, "null"...)
	}
	dst = append(dst, '{')
	first := true
	for i, v := range row {
		if v == nil {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, tc.fields[i]...)
		dst = append(dst, v...)
	}
	return append(dst, '}')
}

// appendUnchanged lists the columns of after whose value was not sent
// because it did not change (Postgres unchanged TOAST): consumers keep the
// value they have. The field is omitted when there are none.
func appendUnchanged(dst []byte, tc *tableCodec, after []sources.Value) []byte {
	first := true
	for i, v := range after {
		if v != nil {
			continue
		}
		if first {
			dst = append(dst, `,"unchanged":[`...)
			first = false
		} else {
			dst = append(dst, ',')
		}
		dst = append(dst, tc.names[i]...)
	}
	if !first {
		dst = append(dst, ']')
	}
	return dst
}

func appendQuoted(dst []byte, s string) []byte {
	// Names are encoded once per table shape, so encoding/json is fine here.
	b, _ := json.Marshal(s)
	return append(dst, b...)
}

// Chunk is a backfill chunk's range, as its chunk event states it
// (DESIGN.md "Checkpoints, outages and backfill"): every key of the table
// in [From, To] on the event's partition that the chunk did not emit and
// that Keep does not list no longer exists. Nil From or To is an open end.
// Bounds and Keep hold keys in key-column order; numeric bounds are JSON
// numbers and text bounds JSON strings, so consumers know how to compare.
type Chunk struct {
	ID       string
	Table    *sources.Table
	From, To []sources.Value
	Keep     [][]sources.Value
}

// AppendChunkEvent appends the chunk event for one partition, whose keep
// list holds only the keys of that partition.
func (e *Encoder) AppendChunkEvent(dst []byte, ch *Chunk, keep [][]sources.Value, now time.Time) []byte {
	tc := e.codec(ch.Table)
	dst = append(dst, `{"op":"chunk","source":{`...)
	dst = append(dst, e.sourceJSON...)
	dst = append(dst, tc.sourceID...)
	dst = append(dst, `"snapshot":true,"chunk":`...)
	dst = appendQuoted(dst, ch.ID)
	dst = append(dst, `},"chunk":{"id":`...)
	dst = appendQuoted(dst, ch.ID)
	dst = append(dst, `,"from":`...)
	dst = appendBound(dst, ch.From)
	dst = append(dst, `,"to":`...)
	dst = appendBound(dst, ch.To)
	dst = append(dst, `,"keep":[`...)
	for i, k := range keep {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = AppendCanonicalKey(dst, k)
	}
	dst = append(dst, `]}`...)
	dst = append(dst, tc.version...)
	dst = append(dst, `,"ts_ms":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli(), 10)
	return append(dst, '}')
}

func appendBound(dst []byte, key []sources.Value) []byte {
	if key == nil {
		return append(dst, "null"...)
	}
	return AppendCanonicalKey(dst, key)
}

// AppendSchemaEvent appends a schema-change event: at c's position, the
// table's new shape (c.Table, with its new version) replaces the old one;
// body is the "schema" member (old and new shape, JSON Schema).
func (e *Encoder) AppendSchemaEvent(dst []byte, c *sources.Change, body []byte, now time.Time) []byte {
	tc := e.codec(c.Table)
	dst = append(dst, `{"op":"schema","source":{`...)
	dst = append(dst, e.sourceJSON...)
	dst = append(dst, tc.sourceID...)
	dst = append(dst, `"pos":"`...)
	dst = append(dst, c.Pos...)
	dst = append(dst, `","txid":`...)
	dst = strconv.AppendUint(dst, c.TxID, 10)
	dst = append(dst, `,"ts_ms":`...)
	dst = strconv.AppendInt(dst, c.CommitTime.UnixMilli(), 10)
	dst = append(dst, `,"snapshot":false},"schema":`...)
	dst = append(dst, body...)
	dst = append(dst, tc.version...)
	dst = append(dst, `,"ts_ms":`...)
	dst = strconv.AppendInt(dst, now.UnixMilli(), 10)
	return append(dst, '}')
}
