package consumer

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

var now = time.Date(2024, 11, 25, 0, 0, 0, 0, time.UTC)

func val(s string) sources.Value { return sources.Value(s) }

// vals turns JSON texts into values; "-" stands for a value the source did
// not send (an unchanged TOASTed column).
func vals(ss ...string) []sources.Value {
	out := make([]sources.Value, len(ss))
	for i, s := range ss {
		if s != "-" {
			out[i] = val(s)
		}
	}
	return out
}

// stream encodes events with the real encoder and routes them to subjects
// as sluice does, so the tests read exactly what sluice publishes.
type stream struct {
	t          *testing.T
	enc        *sink.Encoder
	source     string
	partitions int
	v          *View
}

func newStream(t *testing.T, source string, partitions int) *stream {
	return &stream{t: t, enc: sink.NewEncoder(source, "postgres", "shop"), source: source, partitions: partitions, v: NewView()}
}

func (s *stream) subject(tbl *sources.Table, p int) string {
	return fmt.Sprintf("cdc.%s.%s.%s.%d", s.source, tbl.Schema, tbl.Name, p)
}

func (s *stream) partitionOf(key []sources.Value) int {
	return sink.Partition(sink.AppendCanonicalKey(nil, key), s.partitions)
}

// on applies c as published on partition p, whatever its key hashes to.
func (s *stream) on(p int, c *sources.Change) {
	s.t.Helper()
	if err := s.v.Apply(s.subject(c.Table, p), s.enc.AppendEvent(nil, c, now)); err != nil {
		s.t.Fatalf("apply %s: %v", s.enc.AppendEvent(nil, c, now), err)
	}
}

// send applies c on its key's partition, or on every partition for a
// truncate, as sluice publishes it.
func (s *stream) send(c *sources.Change) {
	s.t.Helper()
	if c.Op == sources.OpTruncate {
		for p := range s.partitions {
			s.on(p, c)
		}
		return
	}
	s.on(s.partitionOf(c.KeyValues()), c)
}

// chunkOn applies the chunk event of partition p with the given keep list.
func (s *stream) chunkOn(p int, ch *sink.Chunk, keep [][]sources.Value) error {
	return s.v.Apply(s.subject(ch.Table, p), s.enc.AppendChunkEvent(nil, ch, keep, now))
}

// chunk publishes the chunk event on every partition, each with the keep
// keys of its own partition, as the pipeline does.
func (s *stream) chunk(ch *sink.Chunk) {
	s.t.Helper()
	keep := make([][][]sources.Value, s.partitions)
	for _, k := range ch.Keep {
		p := s.partitionOf(k)
		keep[p] = append(keep[p], k)
	}
	for p := range s.partitions {
		if err := s.chunkOn(p, ch, keep[p]); err != nil {
			s.t.Fatalf("chunk %s on %d: %v", ch.ID, p, err)
		}
	}
}

func (s *stream) lines() string {
	s.t.Helper()
	var b strings.Builder
	if err := s.v.WriteJSONLines(&b); err != nil {
		s.t.Fatal(err)
	}
	return b.String()
}

// keys returns the canonical keys of a table's rows, in Rows order.
func keys(v *View, t TableName) []string {
	var out []string
	for _, r := range v.Rows(t) {
		out = append(out, r.CanonicalKey())
	}
	return out
}

var orders = &sources.Table{Schema: "public", Name: "orders", Version: 1,
	Columns: []string{"id", "status", "note"}, Types: []string{"bigint", "text", "text"}, Key: []int{0}}

var ordersName = TableName{Source: "pg1", Schema: "public", Table: "orders"}

func ins(row ...string) *sources.Change {
	return &sources.Change{Op: sources.OpCreate, Table: orders, After: vals(row...), Pos: "0/1"}
}
func upd(row ...string) *sources.Change {
	return &sources.Change{Op: sources.OpUpdate, Table: orders, After: vals(row...), Pos: "0/1"}
}
func del(id string) *sources.Change {
	return &sources.Change{Op: sources.OpDelete, Table: orders, Before: vals(id, "-", "-"), Pos: "0/1"}
}
func read(chunk string, row ...string) *sources.Change {
	return &sources.Change{Op: sources.OpRead, Table: orders, After: vals(row...), Pos: "0/1", Chunk: chunk}
}

func TestApplyRows(t *testing.T) {
	line := func(id, row string) string {
		return `{"source":"pg1","table":"public.orders","key":{"id":` + id + `},"row":` + row + "}\n"
	}
	cases := []struct {
		name    string
		changes []*sources.Change
		want    string
	}{
		{"insert", []*sources.Change{ins(`1`, `"new"`, `"x"`)},
			line(`1`, `{"id":1,"note":"x","status":"new"}`)},
		{"update replaces the row", []*sources.Change{ins(`1`, `"new"`, `"x"`), upd(`1`, `"paid"`, `"y"`)},
			line(`1`, `{"id":1,"note":"y","status":"paid"}`)},
		{"update of an unseen row inserts it", []*sources.Change{upd(`3`, `"paid"`, `"z"`)},
			line(`3`, `{"id":3,"note":"z","status":"paid"}`)},
		{"delete", []*sources.Change{ins(`1`, `"a"`, `null`), ins(`2`, `"b"`, `null`), del(`1`)},
			line(`2`, `{"id":2,"note":null,"status":"b"}`)},
		{"delete of an unseen key", []*sources.Change{ins(`1`, `"a"`, `null`), del(`9`)},
			line(`1`, `{"id":1,"note":null,"status":"a"}`)},
		{"insert after delete", []*sources.Change{ins(`1`, `"a"`, `"x"`), del(`1`), ins(`1`, `"b"`, `null`)},
			line(`1`, `{"id":1,"note":null,"status":"b"}`)},
		{"null stays null", []*sources.Change{ins(`1`, `null`, `null`)},
			line(`1`, `{"id":1,"note":null,"status":null}`)},
		{"r repeats a row already seen", []*sources.Change{ins(`1`, `"a"`, `"x"`), read("k1", `1`, `"a"`, `"x"`)},
			line(`1`, `{"id":1,"note":"x","status":"a"}`)},
		{"r brings a newer row", []*sources.Change{ins(`1`, `"a"`, `"x"`), read("k1", `1`, `"b"`, `"y"`)},
			line(`1`, `{"id":1,"note":"y","status":"b"}`)},
		{"all ops", []*sources.Change{ins(`1`, `"a"`, `null`), ins(`2`, `"b"`, `null`), ins(`3`, `"c"`, `null`),
			upd(`2`, `"B"`, `"n"`), del(`3`), read("k", `4`, `"d"`, `null`)},
			line(`1`, `{"id":1,"note":null,"status":"a"}`) + line(`2`, `{"id":2,"note":"n","status":"B"}`) +
				line(`4`, `{"id":4,"note":null,"status":"d"}`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, "pg1", 4)
			for _, c := range tc.changes {
				s.send(c)
			}
			if got := s.lines(); got != tc.want {
				t.Errorf("rows:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestUnchangedToast(t *testing.T) {
	cases := []struct {
		name    string
		changes []*sources.Change
		want    string // the row's columns
	}{
		{"update keeps the value the view had",
			[]*sources.Change{ins(`1`, `"new"`, `"big"`), upd(`1`, `"paid"`, `-`)},
			`{"id":1,"note":"big","status":"paid"}`},
		{"kept across several updates",
			[]*sources.Change{ins(`1`, `"new"`, `"big"`), upd(`1`, `"paid"`, `-`), upd(`1`, `"sent"`, `-`)},
			`{"id":1,"note":"big","status":"sent"}`},
		{"a sent value replaces it",
			[]*sources.Change{ins(`1`, `"new"`, `"big"`), upd(`1`, `"paid"`, `-`), upd(`1`, `"sent"`, `"small"`)},
			`{"id":1,"note":"small","status":"sent"}`},
		{"a null it had stays null",
			[]*sources.Change{ins(`1`, `"new"`, `null`), upd(`1`, `"paid"`, `-`)},
			`{"id":1,"note":null,"status":"paid"}`},
		{"kept over a backfill read of the same row",
			[]*sources.Change{read("k", `1`, `"new"`, `"big"`), upd(`1`, `"paid"`, `-`)},
			`{"id":1,"note":"big","status":"paid"}`},
		{"unknown to the view: left out, never null",
			[]*sources.Change{upd(`1`, `"paid"`, `-`)},
			`{"id":1,"status":"paid"}`},
		{"unknown after a delete",
			[]*sources.Change{ins(`1`, `"new"`, `"big"`), del(`1`), upd(`1`, `"paid"`, `-`)},
			`{"id":1,"status":"paid"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, "pg1", 4)
			for _, c := range tc.changes {
				s.send(c)
			}
			want := `{"source":"pg1","table":"public.orders","key":{"id":1},"row":` + tc.want + "}\n"
			if got := s.lines(); got != want {
				t.Errorf("rows:\n%s\nwant:\n%s", got, want)
			}
		})
	}
	// The event names the column in "unchanged": check the test's premise.
	ev := string(sink.NewEncoder("pg1", "postgres", "shop").AppendEvent(nil, upd(`1`, `"paid"`, `-`), now))
	if !strings.Contains(ev, `"unchanged":["note"]`) {
		t.Fatalf("event does not list the unchanged column: %s", ev)
	}
}

func TestRowRemembersPartition(t *testing.T) {
	s := newStream(t, "pg1", 8)
	s.on(3, ins(`1`, `"a"`, `null`))
	if r, _ := s.v.Lookup(ordersName, `[1]`); r == nil || r.Partition != "3" || r.Chunk != "" {
		t.Fatalf("row after insert on partition 3 = %+v", r)
	}
	s.on(5, read("k9", `1`, `"a"`, `null`))
	if r, _ := s.v.Lookup(ordersName, `[1]`); r == nil || r.Partition != "5" || r.Chunk != "k9" {
		t.Fatalf("row after read on partition 5 = %+v", r)
	}
	s.on(5, upd(`1`, `"b"`, `null`))
	if r, _ := s.v.Lookup(ordersName, `[1]`); r == nil || r.Chunk != "" {
		t.Fatalf("a write from the log must clear the chunk mark: %+v", r)
	}
}

func TestTruncateClearsItsPartition(t *testing.T) {
	s := newStream(t, "pg1", 4)
	other := &sources.Table{Schema: "public", Name: "items", Columns: []string{"id"}, Key: []int{0}}
	for i := range 40 {
		s.send(ins(fmt.Sprint(i), `"x"`, `null`))
		s.send(&sources.Change{Op: sources.OpCreate, Table: other, After: vals(fmt.Sprint(i))})
	}
	otherName := TableName{Source: "pg1", Schema: "public", Table: "items"}
	byPartition := map[string]int{}
	for _, r := range s.v.Rows(ordersName) {
		byPartition[r.Partition]++
	}
	if len(byPartition) != 4 {
		t.Fatalf("rows spread over %d partitions, want 4: %v", len(byPartition), byPartition)
	}

	s.on(1, &sources.Change{Op: sources.OpTruncate, Table: orders})
	for _, r := range s.v.Rows(ordersName) {
		if r.Partition == "1" {
			t.Fatalf("row %s of partition 1 survived its truncate", r.CanonicalKey())
		}
	}
	if got, want := len(s.v.Rows(ordersName)), 40-byPartition["1"]; got != want {
		t.Fatalf("after the truncate of partition 1: %d rows, want %d", got, want)
	}
	if n := len(s.v.Rows(otherName)); n != 40 {
		t.Fatalf("truncate of orders touched items: %d rows left", n)
	}

	s.send(&sources.Change{Op: sources.OpTruncate, Table: orders})
	if n := len(s.v.Rows(ordersName)); n != 0 {
		t.Fatalf("after a truncate on every partition: %d rows left", n)
	}
	if got := s.v.Tables(); !slices.Equal(got, []TableName{otherName}) {
		t.Fatalf("tables = %v, want only items", got)
	}
	// Rows written after the truncate stay.
	s.send(ins(`7`, `"y"`, `null`))
	if n := len(s.v.Rows(ordersName)); n != 1 {
		t.Fatalf("rows after re-insert = %d, want 1", n)
	}
}

func TestUnknownOpIgnored(t *testing.T) {
	v := NewView()
	if err := v.Apply("cdc.pg1.public.orders.0", []byte(`{"op":"c","key":{"id":1},"after":{"id":1},"source":{"name":"pg1","schema":"public","table":"orders"}}`)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{
		`{"op":"schema","key":{"id":1},"source":{"name":"pg1","schema":"public","table":"orders"}}`,
		`{"op":"x","source":{"name":"pg1","schema":"public","table":"other"}}`,
	} {
		if err := v.Apply("cdc.pg1.public.orders.0", []byte(ev)); err != nil {
			t.Fatalf("unknown op: %v", err)
		}
	}
	if v.Len() != 1 || len(v.Tables()) != 1 {
		t.Fatalf("unknown ops changed the view: %d rows, tables %v", v.Len(), v.Tables())
	}
}

func TestApplyErrors(t *testing.T) {
	cases := map[string]string{
		"not JSON":        `{"op":`,
		"key not object":  `{"op":"c","key":[1],"after":{},"source":{"schema":"s","table":"t"}}`,
		"null key":        `{"op":"u","key":null,"after":{},"source":{"schema":"s","table":"t"}}`,
		"empty key":       `{"op":"d","key":{},"source":{"schema":"s","table":"t"}}`,
		"chunk no object": `{"op":"chunk","source":{"schema":"s","table":"t","chunk":"k"}}`,
		"chunk no id":     `{"op":"chunk","source":{"schema":"s","table":"t"},"chunk":{"id":"","from":null,"to":null,"keep":[]}}`,
	}
	for name, ev := range cases {
		t.Run(name, func(t *testing.T) {
			v := NewView()
			err := v.Apply("cdc.pg1.s.t.0", []byte(ev))
			if err == nil {
				t.Fatalf("no error for %s", ev)
			}
			if !strings.Contains(err.Error(), "cdc.pg1.s.t.0") {
				t.Errorf("error does not name the subject: %v", err)
			}
		})
	}
}

// placed is a row written before a chunk event: by the log (chunk "") or
// by an "r" of a chunk, on a partition.
type placed struct {
	key   []string
	part  int
	chunk string
}

func TestChunkRule(t *testing.T) {
	ints := &sources.Table{Schema: "public", Name: "ints", Columns: []string{"id", "v"}, Types: []string{"bigint", "text"}, Key: []int{0}}
	decs := &sources.Table{Schema: "public", Name: "decs", Columns: []string{"id", "v"}, Types: []string{"numeric", "text"}, Key: []int{0}}
	texts := &sources.Table{Schema: "public", Name: "texts", Columns: []string{"id", "v"}, Types: []string{"text", "text"}, Key: []int{0}}
	comp := &sources.Table{Schema: "public", Name: "comp", Columns: []string{"region", "id", "v"}, Types: []string{"text", "int", "text"}, Key: []int{0, 1}}
	row := func(key []string) []sources.Value { return append(vals(key...), val(`"v"`)) }
	p0 := func(keys ...string) []placed {
		var out []placed
		for _, k := range keys {
			out = append(out, placed{key: []string{k}})
		}
		return out
	}
	cases := []struct {
		name     string
		table    *sources.Table
		rows     []placed
		from, to []string // nil: open end
		keep     [][]string
		part     int // the chunk event's partition
		want     []string
	}{
		{name: "deletes rows in range, bounds inclusive", table: ints,
			rows: p0(`1`, `4`, `5`, `7`, `10`, `11`, `15`), from: []string{`5`}, to: []string{`10`},
			want: []string{`[11]`, `[15]`, `[1]`, `[4]`}},
		{name: "spares the rows the chunk emitted", table: ints,
			rows: []placed{{key: []string{`5`}, chunk: "X"}, {key: []string{`7`}}, {key: []string{`10`}, chunk: "X"}},
			from: []string{`5`}, to: []string{`10`}, want: []string{`[10]`, `[5]`}},
		{name: "deletes rows an earlier chunk emitted and this one did not", table: ints,
			rows: []placed{{key: []string{`5`}, chunk: "W"}, {key: []string{`6`}, chunk: "X"}, {key: []string{`20`}, chunk: "W"}},
			from: []string{`1`}, to: []string{`9`},
			want: []string{`[20]`, `[6]`}},
		{name: "keeps the keep-listed keys", table: ints,
			rows: p0(`5`, `6`, `7`), from: []string{`1`}, to: []string{`9`}, keep: [][]string{{`6`}, {`8`}},
			want: []string{`[6]`}},
		{name: "leaves other partitions alone", table: ints,
			rows: []placed{{key: []string{`5`}, part: 1}, {key: []string{`6`}, part: 0}, {key: []string{`7`}, part: 2}},
			from: []string{`1`}, to: []string{`9`}, part: 0,
			want: []string{`[5]`, `[7]`}},
		{name: "open start", table: ints,
			rows: p0(`-100`, `5`, `6`), to: []string{`5`}, want: []string{`[6]`}},
		{name: "open end", table: ints,
			rows: p0(`4`, `5`, `1000000000000000000000`), from: []string{`5`}, want: []string{`[4]`}},
		{name: "both ends open: the whole partition", table: ints,
			rows: []placed{{key: []string{`1`}}, {key: []string{`2`}, chunk: "X"}, {key: []string{`3`}, part: 1}},
			want: []string{`[2]`, `[3]`}},
		{name: "decimal strings compare numerically", table: decs,
			rows: p0(`"-1"`, `"9.4"`, `"9.5"`, `"10"`, `"12.50"`, `"12.51"`, `"100"`),
			from: []string{`9.5`}, to: []string{`12.5`},
			want: []string{`["-1"]`, `["100"]`, `["12.51"]`, `["9.4"]`}},
		{name: "decimal keep matched numerically", table: decs,
			rows: p0(`"10"`, `"12.50"`), from: []string{`9.5`}, to: []string{`12.5`}, keep: [][]string{{`12.5`}},
			want: []string{`["12.50"]`}},
		{name: "text compares bytewise", table: texts,
			rows: p0(`"A"`, `"B"`, `"C"`, `"Z"`, `"a"`, `"b"`, `"é"`),
			from: []string{`"B"`}, to: []string{`"a"`},
			want: []string{`["A"]`, `["b"]`, `["é"]`}},
		{name: "multibyte text compares by UTF-8 bytes", table: texts,
			rows: p0(`"z"`, `"é"`, `"ü"`, `"日本"`, `"日本語"`, `"\u00e9t\u00e9"`),
			from: []string{`"é"`}, to: []string{`"日本"`},
			want: []string{`["z"]`, `["日本語"]`}},
		{name: "composite keys lexicographically, int part numerically", table: comp,
			rows: []placed{{key: []string{`"EU"`, `7`}}, {key: []string{`"eu"`, `4`}}, {key: []string{`"eu"`, `5`}},
				{key: []string{`"eu"`, `10`}}, {key: []string{`"fr"`, `1`}}, {key: []string{`"us"`, `3`}}, {key: []string{`"us"`, `4`}}},
			from: []string{`"eu"`, `5`}, to: []string{`"us"`, `3`},
			want: []string{`["EU",7]`, `["eu",4]`, `["us",4]`}},
		{name: "composite keep", table: comp,
			rows: []placed{{key: []string{`"eu"`, `5`}}, {key: []string{`"eu"`, `6`}}},
			keep: [][]string{{`"eu"`, `6`}}, want: []string{`["eu",6]`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(t, "pg1", 4)
			other := *tc.table
			other.Name = "untouched"
			for _, r := range tc.rows {
				op := sources.OpCreate
				if r.chunk != "" {
					op = sources.OpRead
				}
				s.on(r.part, &sources.Change{Op: op, Table: tc.table, After: row(r.key), Chunk: r.chunk})
				// Same key, same partition, other table: must survive.
				s.on(r.part, &sources.Change{Op: sources.OpCreate, Table: &other, After: row(r.key)})
			}
			var keep [][]sources.Value
			for _, k := range tc.keep {
				keep = append(keep, vals(k...))
			}
			ch := &sink.Chunk{ID: "X", Table: tc.table, Keep: keep}
			if tc.from != nil {
				ch.From = vals(tc.from...)
			}
			if tc.to != nil {
				ch.To = vals(tc.to...)
			}
			if err := s.chunkOn(tc.part, ch, keep); err != nil {
				t.Fatal(err)
			}
			name := TableName{Source: "pg1", Schema: "public", Table: tc.table.Name}
			if got := keys(s.v, name); !slices.Equal(got, tc.want) {
				t.Errorf("rows left = %v, want %v", got, tc.want)
			}
			otherName := TableName{Source: "pg1", Schema: "public", Table: "untouched"}
			if got := len(s.v.Rows(otherName)); got != len(tc.rows) {
				t.Errorf("the other table has %d rows, want %d", got, len(tc.rows))
			}
		})
	}
}

// The rule is about the last write: a row the chunk emitted and the log
// then rewrote is no longer "emitted by this chunk". sluice never puts a
// log change between a chunk's rows and its chunk event, so this only pins
// the rule down.
func TestChunkRuleLooksAtLastWrite(t *testing.T) {
	s := newStream(t, "pg1", 1)
	s.send(read("X", `5`, `"a"`, `null`))
	s.send(upd(`5`, `"b"`, `null`))
	s.send(read("X", `6`, `"a"`, `null`))
	s.chunk(&sink.Chunk{ID: "X", Table: orders, From: vals(`1`), To: vals(`9`)})
	if got := keys(s.v, ordersName); !slices.Equal(got, []string{`[6]`}) {
		t.Fatalf("rows = %v, want [[6]]", got)
	}
}

func TestChunkErrorLeavesViewAlone(t *testing.T) {
	s := newStream(t, "pg1", 1)
	for i := range 5 {
		s.send(ins(fmt.Sprint(i), `"a"`, `null`))
	}
	// A text bound for an integer key cannot be compared.
	err := s.chunkOn(0, &sink.Chunk{ID: "X", Table: orders, From: vals(`"a"`), To: vals(`"z"`)}, nil)
	if err == nil {
		t.Fatal("no error for a bound of another type than the key")
	}
	if n := s.v.Len(); n != 5 {
		t.Fatalf("a failed chunk event deleted rows: %d left, want 5", n)
	}
}

func TestCompareKeys(t *testing.T) {
	cases := []struct {
		key, bound string // JSON arrays
		want       int
		err        bool
	}{
		{`[1]`, `[2]`, -1, false},
		{`[-123456789012345678]`, `[-123456789012345677]`, -1, false},
		{`[123456789012345678]`, `[9]`, 1, false},
		{`[1234567890123456789]`, `[123456789012345678]`, 1, false}, // past the fast path
		{`["a\"b"]`, `["a\"c"]`, -1, false},
		{`["a\u0062"]`, `["ab"]`, 0, false},
		{`[2]`, `[2]`, 0, false},
		{`[10]`, `[9]`, 1, false},
		{`[-5]`, `[3]`, -1, false},
		{`[18446744073709551615]`, `[18446744073709551614]`, 1, false},
		{`[9007199254740993]`, `[9007199254740992]`, 1, false}, // beyond float64
		{`["9.5"]`, `[10]`, -1, false},
		{`["12.50"]`, `[12.5]`, 0, false},
		{`["0.1000000000000000000001"]`, `[0.1]`, 1, false},
		{`["-0.5"]`, `[0]`, -1, false},
		{`["1e3"]`, `[999]`, 1, false},
		{`[1.5]`, `["1.5"]`, 0, true}, // a string bound compares strings
		{`["-Infinity"]`, `[-1e300]`, -1, false},
		{`["Infinity"]`, `[1e300]`, 1, false},
		{`["NaN"]`, `[1e300]`, 1, false},
		{`["B"]`, `["a"]`, -1, false},
		{`["a"]`, `["B"]`, 1, false},
		{`["ab"]`, `["a"]`, 1, false},
		{`["é"]`, `["z"]`, 1, false},
		{`["\u00e9"]`, `["é"]`, 0, false},
		{`["10"]`, `["9"]`, -1, false}, // text, not numbers
		{`["eu",10]`, `["eu",9]`, 1, false},
		{`["eu",10]`, `["fr",1]`, -1, false},
		{`["eu",1]`, `["eu",1]`, 0, false},
		{`[false]`, `[true]`, -1, false},
		{`[true]`, `[true]`, 0, false},
		{`[1]`, `[1,2]`, 0, true},
		{`[1]`, `["a"]`, 0, true},
		{`["x"]`, `[1]`, 0, true},
	}
	for _, tc := range cases {
		var key, bound []json.RawMessage
		if err := json.Unmarshal([]byte(tc.key), &key); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(tc.bound), &bound); err != nil {
			t.Fatal(err)
		}
		got, err := CompareKeys(key, bound)
		if tc.err {
			if err == nil {
				t.Errorf("CompareKeys(%s, %s) = %d, want an error", tc.key, tc.bound, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("CompareKeys(%s, %s) = %d, %v; want %d", tc.key, tc.bound, got, err, tc.want)
		}
	}
}

func TestWriteJSONLines(t *testing.T) {
	v := NewView()
	pg1 := sink.NewEncoder("pg1", "postgres", "shop")
	my := sink.NewEncoder("my", "mysql", "shop")
	items := &sources.Table{Schema: "shop", Name: "items", Columns: []string{"sku", "doc", "n"}, Key: []int{0}}
	comp := &sources.Table{Schema: "public", Name: "comp", Columns: []string{"v", "region", "id"}, Key: []int{1, 2}}
	apply := func(enc *sink.Encoder, subject string, c *sources.Change) {
		if err := v.Apply(subject, enc.AppendEvent(nil, c, now)); err != nil {
			t.Fatal(err)
		}
	}
	apply(pg1, "cdc.pg1.public.orders.0", ins(`9`, `"<b>&"`, "{\"a\": [1,\n 2]}"))
	apply(pg1, "cdc.pg1.public.orders.1", ins(`10`, `"x"`, `null`))
	apply(pg1, "cdc.pg1.public.comp.1", &sources.Change{Op: sources.OpCreate, Table: comp, After: vals(`1`, `"eu"`, `7`)})
	apply(my, "cdc.my.shop.items.0", &sources.Change{Op: sources.OpCreate, Table: items, After: vals(`"b"`, `"d"`, `2`)})
	apply(my, "cdc.my.shop.items.0", &sources.Change{Op: sources.OpCreate, Table: items, After: vals(`"a"`, `"d"`, `1`)})
	// Same schema and table name in another source: no collision.
	apply(my, "cdc.my.public.orders.0", &sources.Change{Op: sources.OpCreate, Table: orders, After: vals(`9`, `"mine"`, `null`)})

	want := `{"source":"my","table":"public.orders","key":{"id":9},"row":{"id":9,"note":null,"status":"mine"}}
{"source":"my","table":"shop.items","key":{"sku":"a"},"row":{"doc":"d","n":1,"sku":"a"}}
{"source":"my","table":"shop.items","key":{"sku":"b"},"row":{"doc":"d","n":2,"sku":"b"}}
{"source":"pg1","table":"public.comp","key":{"region":"eu","id":7},"row":{"id":7,"region":"eu","v":1}}
{"source":"pg1","table":"public.orders","key":{"id":10},"row":{"id":10,"note":null,"status":"x"}}
{"source":"pg1","table":"public.orders","key":{"id":9},"row":{"id":9,"note":{"a":[1,2]},"status":"<b>&"}}
`
	var b strings.Builder
	if err := v.WriteJSONLines(&b); err != nil {
		t.Fatal(err)
	}
	if b.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", b.String(), want)
	}
	for i, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("line %d is not JSON: %s", i, l)
		}
	}
	// All yields the same order, and stops when asked.
	var order []string
	for tn, r := range v.All() {
		order = append(order, tn.Source+"/"+tn.Qualified()+r.CanonicalKey())
		if len(order) == 3 {
			break
		}
	}
	if want := []string{"my/public.orders[9]", `my/shop.items["a"]`, `my/shop.items["b"]`}; !slices.Equal(order, want) {
		t.Fatalf("All = %v, want %v", order, want)
	}
	var empty strings.Builder
	if err := NewView().WriteJSONLines(&empty); err != nil || empty.Len() != 0 {
		t.Fatalf("empty view printed %q, %v", empty.String(), err)
	}
}

// TestBackfillConverges replays what a consumer sees around an outage: it
// follows the log, misses a gap in which rows were deleted, inserted and
// updated, then receives a backfill (chunks of "r" rows, each followed by
// its chunk event on every partition, with log changes landing inside
// chunk windows), and must end equal to the source.
func TestBackfillConverges(t *testing.T) {
	for seed := range uint64(50) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			backfillScenario(t, seed)
		})
	}
}

func backfillScenario(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	s := newStream(t, "pg1", 4)
	db := map[int]string{} // the source table: id -> status
	write := func(id int, status string, visible bool) {
		_, exists := db[id]
		db[id] = status
		if visible {
			op := ins
			if exists {
				op = upd
			}
			s.send(op(fmt.Sprint(id), fmt.Sprintf("%q", status), `null`))
		}
	}
	remove := func(id int, visible bool) {
		delete(db, id)
		if visible {
			s.send(del(fmt.Sprint(id)))
		}
	}
	for id := 1; id <= 60; id++ {
		write(id, "v0", true)
	}
	// The gap: the consumer sees none of it.
	for range 40 {
		id := rng.IntN(80)
		switch rng.IntN(3) {
		case 0:
			remove(id, false)
		case 1:
			write(id, "gap-insert", false)
		default:
			if _, ok := db[id]; ok {
				write(id, "gap-update", false)
			}
		}
	}
	// Delete a whole run of keys, so that some chunk has deleted keys at
	// its boundaries.
	for id := 20; id < 28; id++ {
		remove(id, false)
	}

	stale := 0
	for _, r := range s.v.Rows(ordersName) {
		var id int
		fmt.Sscan(string(r.Key[0]), &id)
		if _, ok := db[id]; !ok {
			stale++
		}
	}
	if stale == 0 {
		t.Fatal("the gap deleted no row the view holds: the scenario tests nothing")
	}

	// The backfill, as backfill.Manager runs it: each chunk reads from the
	// previous chunk's last key (inclusive) so that consecutive ranges
	// share their boundary and leave no key uncovered.
	const size = 7
	var cursor []sources.Value
	for n := 0; ; n++ {
		id := fmt.Sprintf("chunk-%d", n)
		var from int
		if cursor != nil {
			fmt.Sscan(string(cursor[0]), &from)
		} else {
			from = -1 << 31
		}
		// Between the watermarks the log changes some keys; their log
		// events come first and the chunk drops them.
		changed := map[int]bool{}
		for range rng.IntN(3) {
			// Only what reaches the log can be listed: a key the
			// window did not touch keeps its gap state.
			k := from + rng.IntN(3*size)
			switch rng.IntN(2) {
			case 0:
				write(k, "window", true)
				changed[k] = true
			default:
				if _, ok := db[k]; ok {
					remove(k, true)
					changed[k] = true
				}
			}
		}
		ids := slices.Sorted(maps.Keys(db))
		var chunkIDs []int
		for _, k := range ids {
			if k >= from && len(chunkIDs) < size {
				chunkIDs = append(chunkIDs, k)
			}
		}
		var to []sources.Value
		if len(chunkIDs) == size {
			to = vals(fmt.Sprint(chunkIDs[len(chunkIDs)-1]))
		}
		ch := &sink.Chunk{ID: id, Table: orders, From: cursor, To: to}
		for _, k := range chunkIDs {
			if changed[k] {
				continue
			}
			s.send(read(id, fmt.Sprint(k), fmt.Sprintf("%q", db[k]), `null`))
		}
		for k := range changed {
			inFrom := cursor == nil || k >= from
			inTo := to == nil || len(chunkIDs) > 0 && k <= chunkIDs[len(chunkIDs)-1]
			if inFrom && inTo {
				ch.Keep = append(ch.Keep, vals(fmt.Sprint(k)))
			}
		}
		s.chunk(ch)
		// Log traffic between chunks, seen by the consumer.
		if rng.IntN(2) == 0 {
			write(rng.IntN(90), "between", true)
		}
		if to == nil {
			break
		}
		cursor = to
	}

	// The view now equals the source.
	var want strings.Builder
	for _, id := range slices.SortedFunc(maps.Keys(db), func(a, b int) int {
		return strings.Compare(fmt.Sprintf("[%d]", a), fmt.Sprintf("[%d]", b))
	}) {
		fmt.Fprintf(&want, `{"source":"pg1","table":"public.orders","key":{"id":%d},"row":{"id":%d,"note":null,"status":%q}}`+"\n", id, id, db[id])
	}
	if got := s.lines(); got != want.String() {
		t.Fatalf("view differs from the source:\n%s", diffLines(got, want.String()))
	}
	if s.v.Len() != len(db) {
		t.Fatalf("view holds %d rows, the source %d", s.v.Len(), len(db))
	}
}

// diffLines lists the lines only in got (+) and only in want (-).
func diffLines(got, want string) string {
	g := strings.Split(got, "\n")
	w := strings.Split(want, "\n")
	var b strings.Builder
	for _, l := range g {
		if !slices.Contains(w, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	return b.String()
}
