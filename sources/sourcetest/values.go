package sourcetest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

// sqlLit is a literal the suite writes as it is: numbers, TRUE, FALSE.
type sqlLit string

// valueCase is a value of a kind and the JSON every change carries for it
// (DESIGN.md "The event"): integers as numbers, decimals as exact
// strings, timestamps RFC 3339 in UTC, dates as YYYY-MM-DD, bytes base64,
// JSON as the document itself, SQL NULL as null.
type valueCase struct {
	name string
	kind Kind
	in   any // a string is written as a text literal, []byte as a binary one
	want string
}

var valueCases = []valueCase{
	{"integer min", Int, sqlLit("-2147483648"), `-2147483648`},
	{"integer max", Int, sqlLit("2147483647"), `2147483647`},
	{"big integer min", BigInt, sqlLit("-9223372036854775808"), `-9223372036854775808`},
	{"big integer max", BigInt, sqlLit("9223372036854775807"), `9223372036854775807`},
	{"decimal", Decimal, sqlLit("12345678901234567890.0123456789"), `"12345678901234567890.0123456789"`},
	{"decimal scale", Decimal, sqlLit("-0.5"), `"-0.5000000000"`},
	{"decimal zero", Decimal, sqlLit("0"), `"0.0000000000"`},
	{"float", Float, sqlLit("1.5"), `1.5`},
	{"float tenth", Float, sqlLit("0.1"), `0.1`},
	{"float exponent", Float, sqlLit("-2.5e100"), `-2.5e+100`},
	{"text", Text, "snow ☃ \"q\" \\ it's 😀 é\n\t<&>", `"snow ☃ \"q\" \\ it's 😀 é\n\t<&>"`},
	{"text empty", Text, "", `""`},
	{"text spaces", Text, "  padded  ", `"  padded  "`},
	{"boolean true", Bool, sqlLit("TRUE"), `true`},
	{"boolean false", Bool, sqlLit("FALSE"), `false`},
	{"timestamp", Timestamp, "2024-02-29 13:45:06.123456", `"2024-02-29T13:45:06.123456Z"`},
	{"timestamp whole second", Timestamp, "2024-02-29 13:45:06", `"2024-02-29T13:45:06Z"`},
	{"date", Date, "2024-02-29", `"2024-02-29"`},
	{"bytes", Bytes, []byte{0, 0xff, 0x10}, `"AP8Q"`},
	{"bytes empty", Bytes, []byte{}, `""`},
	{"json object", JSON, `{"s": "é", "a": [1, 2.50, null, true], "o": {}}`, `{"a": [1, 2.50, null, true], "o": {}, "s": "é"}`},
	{"json array", JSON, `[1, "x"]`, `[1, "x"]`},
	{"json string", JSON, `"just text"`, `"just text"`},
}

var kinds = []Kind{Int, BigInt, Decimal, Float, Text, Bool, Timestamp, Date, Bytes, JSON}

// columnKinds are the sources.Kind a driver may give a column of each
// kind of value. MySQL's BOOLEAN is TINYINT(1), whose values are the
// integers 1 and 0; fits checks that the kind is the values' form.
var columnKinds = map[Kind][]sources.Kind{
	Int: {sources.KindInteger}, BigInt: {sources.KindInteger}, Decimal: {sources.KindDecimal}, Float: {sources.KindFloat},
	Text: {sources.KindString}, Bool: {sources.KindBool, sources.KindInteger}, Timestamp: {sources.KindTimestamp},
	Date: {sources.KindDate}, Bytes: {sources.KindBytes}, JSON: {sources.KindJSON},
}

// values: each kind's values, and NULL of each, arrive in a change as the
// JSON the event contract states, and a chunk reads them as the stream
// carries them, byte for byte. Values are compared as JSON documents:
// spacing and the order of an object's keys aside, the text must match
// (a decimal's trailing zeros, a timestamp's fraction).
func values(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	cols := []col{{name: "id", kind: Int}}
	colOf := map[Kind]int{}
	for _, k := range kinds {
		if h.DB.Type(k) == "" {
			t.Logf("the database has no type for %s values: left out", k)
			continue
		}
		colOf[k] = len(cols)
		cols = append(cols, col{name: "v_" + strings.ReplaceAll(string(k), " ", "_"), kind: k})
	}
	var cases []valueCase
	var rows [][]string
	for _, c := range valueCases {
		i, ok := colOf[c.kind]
		if !ok {
			continue
		}
		r := slices.Repeat([]string{"NULL"}, len(cols))
		r[0] = itoa(len(cases) + 1)
		switch in := c.in.(type) {
		case sqlLit:
			r[i] = string(in)
		case string:
			r[i] = h.DB.String(in)
		case []byte:
			r[i] = h.DB.Bytes(in)
		}
		if w, ok := h.Differs[c.name]; ok {
			c.want = w
		}
		cases = append(cases, c)
		rows = append(rows, r)
	}
	nulls := slices.Repeat([]string{"NULL"}, len(cols))
	nulls[0] = itoa(len(cases) + 1)
	rows = append(rows, nulls)
	for name := range h.Differs {
		if !slices.ContainsFunc(valueCases, func(c valueCase) bool { return c.name == name }) {
			t.Errorf("Harness.Differs names %q, which is no case of the values part", name)
		}
	}

	src, _, table := d.capture(t, ctx, h, "values", "kinds", cols...)
	st := startStream(t, ctx, src, "")
	d.exec(t, ctx, d.insert("kinds", rows...))
	streamed, _ := st.tx(t, ctx, table, len(rows))

	for i, c := range streamed {
		for j, v := range c.After {
			want := "null"
			name := "NULL"
			if j == 0 {
				want, name = itoa(i+1), "id"
			} else if i < len(cases) && colOf[cases[i].kind] == j {
				want, name = cases[i].want, cases[i].name
			}
			if !json.Valid(v) || canonical(v) != canonical([]byte(want)) {
				t.Errorf("%s (row %d, column %s): streamed %s, want %s", name, i+1, c.Table.Columns[j], v, want)
			}
		}
	}

	// Each column's kind is that of its kind of value, and the form of
	// every value streamed for it.
	shape := streamed[0].Table
	if err := kindsErr(shape); err != nil {
		t.Fatal(err)
	}
	for j, c := range cols {
		if got := shape.ColumnKind(j); !slices.Contains(columnKinds[c.kind], got) {
			t.Errorf("column %s (%s values, type %s) has kind %q, want one of %q", c.name, c.kind, shape.Types[j], got, columnKinds[c.kind])
		}
	}
	for i, ch := range streamed {
		for j, v := range ch.After {
			if !fits(shape.ColumnKind(j), v) {
				t.Errorf("row %d, column %s: %s is no value of its kind %q", i+1, shape.Columns[j], v, shape.ColumnKind(j))
			}
		}
	}

	chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: table, Limit: len(rows) + 1})
	if err != nil || len(chunk.Rows) != len(rows) {
		t.Fatalf("ReadChunk: %d rows, %v; want %d", len(chunk.Rows), err, len(rows))
	}
	if !slices.Equal(chunk.Table.Columns, shape.Columns) || chunk.Table.Version != shape.Version || !slices.Equal(chunk.Table.Kinds, shape.Kinds) {
		t.Errorf("the chunk's shape %q (version %d, kinds %q) is not the stream's %q (version %d, kinds %q)",
			chunk.Table.Columns, chunk.Table.Version, chunk.Table.Kinds, shape.Columns, shape.Version, shape.Kinds)
	}
	for i, r := range chunk.Rows {
		for j := range r {
			if !bytes.Equal(r[j], streamed[i].After[j]) {
				t.Errorf("row %d, column %s: read %s, streamed %s", i+1, shape.Columns[j], r[j], streamed[i].After[j])
			}
		}
	}
}

// fits tells whether v, a value's JSON, has the form of kind (DESIGN.md
// "The event"); null fits every kind.
func fits(kind sources.Kind, v []byte) bool {
	var x any
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if dec.Decode(&x) != nil {
		return false
	}
	if x == nil {
		return true
	}
	str, isString := x.(string)
	switch kind {
	case sources.KindInteger:
		n, ok := x.(json.Number)
		return ok && !strings.ContainsAny(string(n), ".eE")
	case sources.KindDecimal:
		return isString && decimalText.MatchString(str)
	case sources.KindFloat:
		_, ok := x.(json.Number)
		return ok || str == "NaN" || str == "Infinity" || str == "-Infinity"
	case sources.KindBool:
		_, ok := x.(bool)
		return ok
	case sources.KindBytes:
		_, err := base64.StdEncoding.DecodeString(str)
		return isString && err == nil
	case sources.KindString, sources.KindDate, sources.KindTime, sources.KindTimestamp, sources.KindUUID:
		return isString
	case sources.KindArray:
		_, ok := x.([]any)
		return ok
	}
	return true // JSON, other: any value
}

var decimalText = regexp.MustCompile(`^(-?[0-9]+(\.[0-9]+)?|NaN|-?Infinity)$`)

// canonical is a JSON document re-encoded: numbers keep their text,
// objects their keys sorted, and no spacing.
func canonical(v []byte) string {
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return "invalid JSON: " + string(v)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return "invalid JSON: " + string(v)
	}
	return string(b)
}
