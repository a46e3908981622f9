package consumer

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"slices"
)

// WriteJSONLines writes every row as one JSON object per line, in the
// order of All:
//
//	{"source":"pg1","table":"public.orders","key":{"id":42},"row":{"id":42,"status":"paid"}}
//
// "key" lists the key columns in key order, as in events; "row" lists the
// columns sorted by name, since events may leave unchanged columns out and
// so no event fixes one column order. Values are the events' JSON,
// compacted. The output is thus a pure function of the view's contents:
// two views holding the same rows print the same bytes.
func (v *View) WriteJSONLines(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var line []byte
	for t, r := range v.All() {
		line = AppendRowJSON(line[:0], t, r)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// AppendRowJSON appends the JSON object WriteJSONLines prints for row r
// of table t, without a newline.
func AppendRowJSON(dst []byte, t TableName, r *Row) []byte {
	dst = append(dst, `{"source":`...)
	dst = appendString(dst, t.Source)
	dst = append(dst, `,"table":`...)
	dst = appendString(dst, t.Qualified())
	dst = append(dst, `,"key":{`...)
	for i, c := range r.KeyColumns {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, c)
		dst = append(dst, ':')
		dst = appendValue(dst, r.Key[i])
	}
	dst = append(dst, `},"row":{`...)
	names := make([]string, 0, len(r.Columns))
	for c := range r.Columns {
		names = append(names, c)
	}
	slices.Sort(names)
	for i, c := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, c)
		dst = append(dst, ':')
		dst = appendValue(dst, r.Columns[c])
	}
	return append(dst, "}}"...)
}

// appendString quotes s as JSON without escaping <, > and &, which
// encoding/json does by default for HTML's sake and which would make
// names differ from the events'.
func appendString(dst []byte, s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(dst, bytes.TrimSuffix(b.Bytes(), []byte{'\n'})...)
}

// appendValue compacts a value so that a json or jsonb column written with
// line breaks cannot split a line.
func appendValue(dst []byte, v json.RawMessage) []byte {
	b := bytes.NewBuffer(dst)
	if err := json.Compact(b, v); err != nil {
		// Values come from decoded events and are valid; stay total anyway.
		b.Write(v)
	}
	return b.Bytes()
}
