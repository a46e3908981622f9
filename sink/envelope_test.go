package sink

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestEnvelopeGolden(t *testing.T) {
	orders := &sources.Table{
		Schema: "public", Name: "orders", Version: 3,
		Columns: []string{"region", "id", "status", "doc", "amount"},
		Key:     []int{0, 1},
	}
	commit := time.Date(2024, 11, 25, 0, 0, 0, 0, time.UTC)
	now := commit.Add(123 * time.Millisecond)
	v := func(s string) sources.Value { return sources.Value(s) }
	row := []sources.Value{v(`"eu"`), v(`7`), v(`"paid"`), v(`{"a":[1,2]}`), v(`"19.90"`)}
	cases := map[string]*sources.Change{
		"insert": {Op: sources.OpCreate, Table: orders, After: row, Pos: "0/16B3748", TxID: 771, CommitTime: commit},
		"update_unchanged_toast": {Op: sources.OpUpdate, Table: orders, Pos: "0/16B3748", TxID: 771, CommitTime: commit,
			After: []sources.Value{v(`"eu"`), v(`7`), v(`"shipped"`), nil, v(`"19.90"`)}},
		"update_full_identity": {Op: sources.OpUpdate, Table: orders, Before: row, Pos: "0/16B3748", TxID: 771, CommitTime: commit,
			After: []sources.Value{v(`"eu"`), v(`7`), v(`"shipped"`), v(`{"a":[1,2]}`), v(`"19.90"`)}},
		"delete_key_only": {Op: sources.OpDelete, Table: orders, Pos: "0/16B3748", TxID: 771, CommitTime: commit,
			Before: []sources.Value{v(`"eu"`), v(`7`), nil, nil, nil}},
		"truncate": {Op: sources.OpTruncate, Table: orders, Pos: "0/16B3748", TxID: 771, CommitTime: commit},
	}
	enc := NewEncoder("pg1", "postgres", `shop "main"`)
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			got := enc.AppendEvent(nil, c, now)
			if !json.Valid(got) {
				t.Fatalf("invalid JSON: %s", got)
			}
			path := filepath.Join("testdata", name+".json")
			if *update {
				if err := os.WriteFile(path, append(got, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./sink -run Golden -update to create it)", err)
			}
			if string(got)+"\n" != string(want) {
				t.Errorf("event differs from %s:\n got: %s\nwant: %s", path, got, want)
			}
		})
	}
}

// TestEventOwnBuffer: Event writes what AppendEvent writes, each event in
// a buffer of its own that a later event never writes into (a publisher
// keeps them until they are stored), one allocation once the shape's size
// is known.
func TestEventOwnBuffer(t *testing.T) {
	tbl := &sources.Table{Schema: "public", Name: "orders", Version: 1, Columns: []string{"id", "note"}, Key: []int{0}}
	enc := NewEncoder("pg1", "postgres", "shop")
	now := time.Now()
	change := func(id int, note string) *sources.Change {
		return &sources.Change{Op: sources.OpCreate, Table: tbl, Pos: "0/1", CommitTime: now,
			After: []sources.Value{sources.Value(strconv.Itoa(id)), sources.Value(strconv.Quote(note))}}
	}
	var kept [][]byte
	var want []string
	for i, note := range []string{"short", strings.Repeat("long ", 50), "", strings.Repeat("x", 1000), "s"} {
		c := change(i, note)
		kept = append(kept, enc.Event(c, now))
		want = append(want, string(enc.AppendEvent(nil, c, now)))
	}
	for i := range kept {
		if string(kept[i]) != want[i] {
			t.Errorf("event %d = %s, want %s", i, kept[i], want[i])
		}
	}
	c := change(1, "steady")
	enc.Event(c, now)
	if n := testing.AllocsPerRun(100, func() { enc.Event(c, now) }); n != 1 {
		t.Errorf("Event allocates %v times per event of a known shape, want 1", n)
	}
}

func BenchmarkEncodePartition(b *testing.B) {
	tbl := &sources.Table{Schema: "public", Name: "orders", Version: 1,
		Columns: []string{"id", "customer", "amount", "status", "created_at"}, Key: []int{0}}
	c := &sources.Change{Op: sources.OpCreate, Table: tbl, Pos: "0/16B3748", TxID: 771, CommitTime: time.Now(),
		After: []sources.Value{sources.Value(`123456`), sources.Value(`"customer-42"`), sources.Value(`"19.90"`),
			sources.Value(`"paid"`), sources.Value(`"2024-02-29T11:45:06.5Z"`)}}
	enc := NewEncoder("pg1", "postgres", "shop")
	var buf, key []byte
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		key = AppendCanonicalKey(key[:0], c.KeyValues())
		_ = Partition(key, 8)
		buf = enc.AppendEvent(buf[:0], c, now)
	}
	b.SetBytes(int64(len(buf)))
}
