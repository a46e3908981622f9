package sourcetest

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// row is a row's values as text, nil ones as "-", a missing row as none.
func row(vals []sources.Value) string {
	if vals == nil {
		return "none"
	}
	var out []string
	for _, v := range vals {
		if v == nil {
			out = append(out, "-")
		} else {
			out = append(out, string(v))
		}
	}
	return strings.Join(out, " ")
}

// sameOrMissing tells whether got has want's values, or no value (nil)
// where the database does not provide one: PostgreSQL's old row of a
// delete holds only the key (replica identity DEFAULT).
func sameOrMissing(got, want []sources.Value) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != nil && !bytes.Equal(got[i], want[i]) {
			return false
		}
	}
	return true
}

func equal(a, b sources.Value) bool { return bytes.Equal(a, b) }

func vals(vals ...string) []sources.Value {
	out := make([]sources.Value, len(vals))
	for i, v := range vals {
		out[i] = sources.Value(v)
	}
	return out
}

// changes: an insert, an update, a delete and a transaction of several
// statements stream with their row images and one position per
// transaction, each followed by its commit. An update of the key streams
// as a delete of the old key and an insert of the new, in one transaction
// (both drivers; the key partitions the subjects).
func changes(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	src, _, table := d.capture(t, ctx, h, "changes", "ch", col{name: "id", kind: Int}, col{name: "v", kind: Text}, col{name: "n", kind: Int})
	st := startStream(t, ctx, src, "")
	ch := d.table("ch")
	id := h.DB.Ident("id")

	type want struct {
		op            sources.Op
		before, after []sources.Value
	}
	var positions []sources.Position
	for _, c := range []struct {
		name  string
		stmts []string
		want  []want
	}{
		{"insert", []string{d.insert("ch", []string{"1", h.DB.String("a"), "10"})},
			[]want{{sources.OpCreate, nil, vals("1", `"a"`, "10")}}},
		{"update", []string{"UPDATE " + ch + " SET " + h.DB.Ident("v") + " = " + h.DB.String("b") + " WHERE " + id + " = 1"},
			[]want{{sources.OpUpdate, vals("1", `"a"`, "10"), vals("1", `"b"`, "10")}}},
		{"key change", []string{"UPDATE " + ch + " SET " + id + " = 2 WHERE " + id + " = 1"},
			[]want{{sources.OpDelete, vals("1", `"b"`, "10"), nil}, {sources.OpCreate, nil, vals("2", `"b"`, "10")}}},
		{"delete", []string{"DELETE FROM " + ch + " WHERE " + id + " = 2"},
			[]want{{sources.OpDelete, vals("2", `"b"`, "10"), nil}}},
		{"two statements", []string{d.insert("ch", []string{"3", "NULL", "NULL"}), d.insert("ch", []string{"4", h.DB.String(""), "-1"})},
			[]want{{sources.OpCreate, nil, vals("3", "null", "null")}, {sources.OpCreate, nil, vals("4", `""`, "-1")}}},
	} {
		d.exec(t, ctx, c.stmts...)
		got, commit := st.tx(t, ctx, table, len(c.want))
		for i, w := range c.want {
			g := got[i]
			// The old row of an update may be missing (PostgreSQL sends
			// none with replica identity DEFAULT); present, it must be
			// right. A delete's holds at least the key.
			ok := g.Op == w.op && slices.EqualFunc(g.After, w.after, equal)
			switch {
			case w.before == nil:
				ok = ok && g.Before == nil
			case w.op == sources.OpDelete:
				ok = ok && sameOrMissing(g.Before, w.before) && g.Before[0] != nil
			default:
				ok = ok && (g.Before == nil || sameOrMissing(g.Before, w.before))
			}
			if !ok {
				t.Errorf("%s: change %d is %s before %s after %s; want %s before %s after %s",
					c.name, i+1, g.Op, row(g.Before), row(g.After), w.op, row(w.before), row(w.after))
			}
			if g.CommitTime.IsZero() || time.Since(g.CommitTime) > time.Hour {
				t.Errorf("%s: change %d has the commit time %v", c.name, i+1, g.CommitTime)
			}
		}
		if slices.Contains(positions, got[0].Pos) {
			t.Errorf("%s: the transaction's position %s is an earlier one's", c.name, got[0].Pos)
		}
		positions = append(positions, got[0].Pos)
		src.Ack(commit.Pos)
	}
}

// transaction: 5,000 rows inserted by one transaction arrive in order,
// with one position, and one commit after the last.
func transaction(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	src, _, table := d.capture(t, ctx, h, "transaction", "bigtx", col{name: "id", kind: Int}, col{name: "v", kind: Text})
	st := startStream(t, ctx, src, "")

	const rows, per = 5000, 1000
	var stmts []string
	for from := 1; from <= rows; from += per {
		var vals [][]string
		for id := from; id < from+per; id++ {
			vals = append(vals, []string{itoa(id), h.DB.String("row " + itoa(id))})
		}
		stmts = append(stmts, d.insert("bigtx", vals...))
	}
	d.exec(t, ctx, stmts...)
	got, commit := st.tx(t, ctx, table, rows)
	for i, c := range got {
		if c.Op != sources.OpCreate || string(c.After[0]) != itoa(i+1) {
			t.Fatalf("change %d is %s of %s, want the insert of id %d", i+1, c.Op, row(c.After), i+1)
		}
	}
	src.Ack(commit.Pos)
	d.exec(t, ctx, d.insert("bigtx", []string{itoa(rows + 1), "NULL"}))
	if next, _ := st.tx(t, ctx, table, 1); string(next[0].After[0]) != itoa(rows+1) || next[0].Pos == got[0].Pos {
		t.Errorf("after the transaction came %s at %s, want id %d at a new position", row(next[0].After), next[0].Pos, rows+1)
	}
}

// ddl: a column added between two inserts shows in the second change's
// table, with a new schema version, and not in the first's; chunks read
// the table as it is now.
func ddl(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	src, _, table := d.capture(t, ctx, h, "ddl", "grows", col{name: "id", kind: Int}, col{name: "v", kind: Text})
	st := startStream(t, ctx, src, "")

	d.exec(t, ctx, d.insert("grows", []string{"1", h.DB.String("a")}))
	d.exec(t, ctx, "ALTER TABLE "+d.table("grows")+" ADD COLUMN "+h.DB.Ident("extra")+" "+h.DB.Type(Int))
	d.exec(t, ctx, d.insert("grows", []string{"2", h.DB.String("b"), "7"}))
	first, _ := st.tx(t, ctx, table, 1)
	second, _ := st.tx(t, ctx, table, 1)
	a, b := first[0], second[0]
	if !slices.Equal(a.Table.Columns, []string{"id", "v"}) || row(a.After) != `1 "a"` {
		t.Errorf("before the ALTER: columns %q, row %s; want id, v: 1 \"a\"", a.Table.Columns, row(a.After))
	}
	if !slices.Equal(b.Table.Columns, []string{"id", "v", "extra"}) || row(b.After) != `2 "b" 7` {
		t.Errorf("after the ALTER: columns %q, row %s; want id, v, extra: 2 \"b\" 7", b.Table.Columns, row(b.After))
	}
	if b.Table.Version <= a.Table.Version {
		t.Errorf("schema versions %d then %d: a new shape must have a higher one", a.Table.Version, b.Table.Version)
	}
	chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: table, Limit: 10})
	if err != nil || len(chunk.Rows) != 2 || !slices.Equal(chunk.Table.Columns, b.Table.Columns) || row(chunk.Rows[0]) != `1 "a" null` {
		t.Fatalf("ReadChunk after the ALTER: %+v, %v", chunk, err)
	}
	if chunk.Table.Version != b.Table.Version {
		t.Errorf("the chunk's shape has version %d, the stream's %d: the same shape must keep its version", chunk.Table.Version, b.Table.Version)
	}
}

// resume: Stream from a commit's position goes on with the next
// transaction, whether it was handed over before the stream stopped or
// committed while it was stopped, and never repeats the transactions up
// to that commit; so does a source opened anew, as after a restart.
func resume(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	src, spec, table := d.capture(t, ctx, h, "resume", "rs", col{name: "id", kind: Int})
	insert := func(id int) { d.exec(t, ctx, d.insert("rs", []string{itoa(id)})) }
	// ids reads n transactions of one insert each and returns their ids
	// and the last commit.
	ids := func(st *stream, n int) ([]string, sources.Commit) {
		t.Helper()
		var got []string
		var commit sources.Commit
		for range n {
			var c []*sources.Change
			c, commit = st.tx(t, ctx, table, 1)
			got = append(got, string(c[0].After[0]))
		}
		return got, commit
	}

	st := startStream(t, ctx, src, "")
	insert(1)
	insert(2)
	got, c1 := ids(st, 1)
	src.Ack(c1.Pos)
	got2, c2 := ids(st, 1)
	if got = append(got, got2...); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("streamed %q, want 1, 2", got)
	}
	st.stop(t)
	insert(3)

	st = startStream(t, ctx, src, c1.Pos)
	insert(4)
	if got, _ := ids(st, 3); !slices.Equal(got, []string{"2", "3", "4"}) {
		t.Errorf("from the commit of 1: %q, want 2, 3 and 4", got)
	}
	st.stop(t)

	st = startStream(t, ctx, src, c2.Pos)
	if got, _ := ids(st, 2); !slices.Equal(got, []string{"3", "4"}) {
		t.Errorf("from the commit of 2: %q, want 3 and 4", got)
	}
	st.stop(t)

	again := open(t, ctx, h.Driver, spec)
	st = startStream(t, ctx, again, c2.Pos)
	insert(5)
	if got, _ := ids(st, 3); !slices.Equal(got, []string{"3", "4", "5"}) {
		t.Errorf("a new source from the commit of 2: %q, want 3, 4 and 5", got)
	}
}

// reset: Stream from a position whose log is gone fails with ErrLogLost,
// and Reset gives a position from which it streams what comes next.
func reset(t *testing.T, h Harness) {
	if h.LoseLog == nil {
		t.Skip("needs Harness.LoseLog")
	}
	ctx := testCtx(t)
	d := dialect{h.DB}
	src, spec, table := d.capture(t, ctx, h, "reset", "gap", col{name: "id", kind: Int})
	old, err := src.Reset(ctx)
	if err != nil || old == "" {
		t.Fatalf("Reset with the log in place: %q, %v", old, err)
	}
	d.exec(t, ctx, d.insert("gap", []string{"1"}))
	if err := h.LoseLog(ctx, spec); err != nil {
		t.Fatalf("LoseLog: %v", err)
	}
	d.exec(t, ctx, d.insert("gap", []string{"2"}))

	s := &stream{events: make(chan event, 10), opened: make(chan struct{})}
	err = func() error {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return src.Stream(sctx, old, s)
	}()
	if !errors.Is(err, sources.ErrLogLost) {
		t.Fatalf("Stream from a lost position: %v, want ErrLogLost", err)
	}
	select {
	case e := <-s.events:
		if e.change != nil {
			t.Errorf("Stream from a lost position handed over %s of %s", e.change.Op, row(e.change.After))
		}
	default:
	}

	now, err := src.Reset(ctx)
	if err != nil || now == "" || now == old {
		t.Fatalf("Reset after the loss: %q, %v; want a new position", now, err)
	}
	st := startStream(t, ctx, src, now)
	d.exec(t, ctx, d.insert("gap", []string{"3"}))
	if c, _ := st.tx(t, ctx, table, 1); string(c[0].After[0]) != "3" {
		t.Errorf("after Reset the stream read %s first, want 3", row(c[0].After))
	}
}
