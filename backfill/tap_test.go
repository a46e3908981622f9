package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// signalSource is just enough of a source for the tap's logic: it names
// its signal table and decodes watermark rows. Reading and writing are
// exercised against real databases in cmd/sluice.
type signalSource struct{ Source }

var signalTable = &sources.Table{Schema: "public", Name: "sluice_signal", Columns: []string{"source", "kind", "id"}, Key: []int{0}}

func (signalSource) ReadSignal(c *sources.Change) (sources.Signal, bool) {
	if c.Table != signalTable {
		return sources.Signal{}, false
	}
	var s sources.Signal
	_ = json.Unmarshal(c.After[0], &s.Source)
	_ = json.Unmarshal(c.After[1], &s.Kind)
	_ = json.Unmarshal(c.After[2], &s.ID)
	return s, true
}

// recorder is the pipeline's side of the tap: what it would publish.
type recorder struct {
	rows   []*sources.Change
	chunks []*sink.Chunk
}

func (r *recorder) Change(_ context.Context, c *sources.Change) error {
	r.rows = append(r.rows, c)
	return nil
}

func (r *recorder) Chunk(_ context.Context, ch *sink.Chunk, _ sources.Position) error {
	r.chunks = append(r.chunks, ch)
	return nil
}

var items = &sources.Table{Schema: "public", Name: "items", Columns: []string{"id", "v"}, Types: []string{"int4", "int4"}, Key: []int{0}}

func row(id, v string) []sources.Value { return vals(id, v) }

func signal(kind, id string, tx uint64) *sources.Change {
	q := func(s string) sources.Value { b, _ := json.Marshal(s); return b }
	return &sources.Change{Op: sources.OpUpdate, Table: signalTable, After: []sources.Value{q("pg1"), q(kind), q(id)}, TxID: tx, Pos: "0/1"}
}

func update(id, v string, tx uint64) *sources.Change {
	return &sources.Change{Op: sources.OpUpdate, Table: items, After: row(id, v), TxID: tx}
}

// tapChunk runs one chunk's window through the tap: changes before the
// low watermark, between the watermarks, then the high one.
func tapChunk(t *testing.T, chunk sources.Chunk, before, between []*sources.Change) (*recorder, result) {
	t.Helper()
	m := New(Config{Source: "pg1"}, signalSource{}, nil)
	w := &window{id: "c1", table: "public.items", events: true, done: make(chan result, 1)}
	m.wins = []*window{w}
	out := &recorder{}
	feed := func(c *sources.Change) {
		drop, err := m.Change(context.Background(), c, out)
		if err != nil {
			t.Fatal(err)
		}
		if drop != (c.Table == signalTable) {
			t.Fatalf("change of %s: drop = %v", c.Table.Name, drop)
		}
	}
	for _, c := range before {
		feed(c)
	}
	feed(signal("low", "c1", 100))
	w.chunk, w.ready = chunk, true
	for _, c := range between {
		feed(c)
	}
	feed(signal("high", "c1", 101))
	select {
	case r := <-w.done:
		return out, r
	default:
		t.Fatal("the high watermark did not finish the chunk")
	}
	return nil, result{}
}

func TestTapDropsRowsTheLogChanged(t *testing.T) {
	chunk := sources.Chunk{Table: items, Rows: [][]sources.Value{row("1", "0"), row("2", "0"), row("3", "0")}}
	out, res := tapChunk(t, chunk, nil, []*sources.Change{update("2", "1", 50)})
	if res.err != nil || res.emitted != 2 || len(out.rows) != 2 {
		t.Fatalf("emitted %d rows (%v), want 2: row 2 changed in the window", res.emitted, res.err)
	}
	for _, c := range out.rows {
		if c.Op != sources.OpRead || c.Chunk != "c1" || string(c.After[0]) == "2" || c.Pos != "0/1" {
			t.Fatalf("emitted %+v", c)
		}
	}
	if len(out.chunks) != 1 || len(out.chunks[0].Keep) != 1 || string(out.chunks[0].Keep[0][0]) != "2" || out.chunks[0].From != nil || out.chunks[0].To != nil {
		t.Fatalf("chunk event %+v, want keep [[2]] and open ends", out.chunks)
	}
}

func TestTapRereadsAChunkThatMissedALoggedCommit(t *testing.T) {
	// Transaction 40 is logged before the low watermark but the chunk's
	// snapshot still saw it running: the chunk may be older than the log.
	chunk := sources.Chunk{Table: items, Rows: [][]sources.Value{row("1", "0")}, Invisible: []uint64{40}}
	out, res := tapChunk(t, chunk, []*sources.Change{update("1", "1", 40)}, nil)
	if !errors.Is(res.err, errRetryChunk) || len(out.rows)+len(out.chunks) != 0 {
		t.Fatalf("result %+v, %d rows, %d chunk events; want the chunk read again and nothing published", res, len(out.rows), len(out.chunks))
	}
	// Running at the snapshot and logged inside the window is the normal
	// case: its keys are dropped, the rest published.
	chunk.Rows = append(chunk.Rows, row("2", "0"))
	out, res = tapChunk(t, chunk, nil, []*sources.Change{update("1", "1", 40)})
	if res.err != nil || res.emitted != 1 || string(out.rows[0].After[0]) != "2" {
		t.Fatalf("result %+v, rows %v; want row 2 alone", res, out.rows)
	}
}

func TestTapTruncateInWindowDropsTheChunk(t *testing.T) {
	chunk := sources.Chunk{Table: items, Rows: [][]sources.Value{row("1", "0")}}
	out, res := tapChunk(t, chunk, nil, []*sources.Change{{Op: sources.OpTruncate, Table: items, TxID: 60}})
	if res.err != nil || len(out.rows) != 0 || len(out.chunks) != 1 {
		t.Fatalf("after a truncate in the window: %d rows, %d chunk events (%v); want none and the chunk event", len(out.rows), len(out.chunks), res.err)
	}
}

// TestTapQueuedWindows: with the next chunk opened while the one before
// is emitted, each chunk keeps the changes of its own window alone (in
// log order its low watermark follows the high one before it), and a
// watermark of a window no longer queued is ignored.
func TestTapQueuedWindows(t *testing.T) {
	m := New(Config{Source: "pg1"}, signalSource{}, nil)
	chunkOf := func(ids ...string) sources.Chunk {
		c := sources.Chunk{Table: items}
		for _, id := range ids {
			c.Rows = append(c.Rows, row(id, "0"))
		}
		return c
	}
	w1 := &window{id: "c1", table: "public.items", events: true, done: make(chan result, 1),
		chunk: chunkOf("1", "2", "3"), to: []sources.Value{sources.Value("3")}, ready: true}
	w2 := &window{id: "c2", table: "public.items", events: true, done: make(chan result, 1),
		chunk: chunkOf("3", "4", "5"), from: []sources.Value{sources.Value("3")}, ready: true}
	gone := &window{id: "c0", table: "public.items", events: true, done: make(chan result, 1), chunk: chunkOf("9"), ready: true}
	m.wins = []*window{w1, w2}
	out := &recorder{}
	for _, c := range []*sources.Change{
		signal("low", "c0", 90), // an earlier attempt's watermarks: ignored
		signal("low", "c1", 100),
		update("2", "1", 101), // in c1's window
		signal("high", "c0", 102),
		signal("high", "c1", 103),
		update("4", "1", 104), // between the windows: in neither
		signal("low", "c2", 105),
		update("5", "1", 106), // in c2's window
		update("1", "2", 107), // in c2's window, outside its range
		signal("high", "c2", 108),
	} {
		if _, err := m.Change(context.Background(), c, out); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []*window{w1, w2} {
		select {
		case r := <-w.done:
			if r.err != nil {
				t.Fatalf("chunk %s: %v", w.id, r.err)
			}
		default:
			t.Fatalf("chunk %s did not finish at its high watermark", w.id)
		}
	}
	select {
	case r := <-gone.done:
		t.Fatalf("a window no longer queued finished: %+v", r)
	default:
	}
	var emitted []string
	for _, c := range out.rows {
		emitted = append(emitted, c.Chunk+":"+string(c.After[0]))
	}
	// c2 re-reads c1's last row (3), which its chunk event covers again.
	if want := []string{"c1:1", "c1:3", "c2:3", "c2:4"}; !slices.Equal(emitted, want) {
		t.Errorf("emitted %v, want %v: each chunk drops the keys changed in its own window only", emitted, want)
	}
	if len(out.chunks) != 2 || len(out.chunks[0].Keep) != 1 || string(out.chunks[0].Keep[0][0]) != "2" ||
		len(out.chunks[1].Keep) != 1 || string(out.chunks[1].Keep[0][0]) != "5" {
		t.Errorf("chunk events %+v, want c1 keeping [2] and c2 keeping [5]", out.chunks)
	}
}
