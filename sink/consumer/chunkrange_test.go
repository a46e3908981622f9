package consumer

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// A chunk event over integer keys, checked without parsing them again,
// deletes exactly the rows the rule names, as CompareKeys orders them:
// random keys (one and two columns, negative, beyond the small-integer
// range), bounds (open or not), marks and keep lists against the rule
// written out plainly.
func TestChunkRuleIntegerKeys(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for round := range 300 {
		cols := 1 + rng.IntN(2)
		tbl := &sources.Table{Schema: "public", Name: "t", Columns: append([]string{"a", "b"}[:cols:cols], "v"), Key: []int{0, 1}[:cols]}
		key := func() []string {
			k := make([]string, cols)
			for i := range k {
				switch rng.IntN(20) {
				case 0:
					k[i] = "123456789012345678901" // not a small integer: the slow path
				default:
					k[i] = strconv.Itoa(rng.IntN(40) - 10)
				}
			}
			return k
		}
		s := newStream(t, "pg1", 1)
		type placedRow struct {
			key   []string
			chunk string
		}
		var rows []placedRow
		for range rng.IntN(30) {
			r := placedRow{key: key()}
			if rng.IntN(3) == 0 {
				r.chunk = []string{"X", "W"}[rng.IntN(2)]
			}
			op := sources.OpCreate
			if r.chunk != "" {
				op = sources.OpRead
			}
			s.on(0, &sources.Change{Op: op, Table: tbl, After: append(vals(r.key...), val(`"v"`)), Chunk: r.chunk})
			rows = slices.DeleteFunc(rows, func(o placedRow) bool { return slices.Equal(o.key, r.key) })
			rows = append(rows, r)
		}
		ch := &sink.Chunk{ID: "X", Table: tbl}
		if rng.IntN(4) > 0 {
			ch.From = vals(key()...)
		}
		if rng.IntN(4) > 0 {
			ch.To = vals(key()...)
		}
		for range rng.IntN(3) {
			ch.Keep = append(ch.Keep, vals(key()...))
		}
		if err := s.chunkOn(0, ch, ch.Keep); err != nil {
			t.Fatal(err)
		}
		raw := func(v []sources.Value) []json.RawMessage {
			if v == nil {
				return nil
			}
			out := make([]json.RawMessage, len(v))
			for i, x := range v {
				out[i] = json.RawMessage(x)
			}
			return out
		}
		var want []string
		for _, r := range rows {
			k := raw(vals(r.key...))
			in, err := inRange(k, raw(ch.From), raw(ch.To))
			if err != nil {
				t.Fatal(err)
			}
			kept := false
			for _, kk := range ch.Keep {
				if c, _ := CompareKeys(k, raw(kk)); c == 0 {
					kept = true
				}
			}
			if !in || r.chunk == "X" || kept {
				want = append(want, canonical(k))
			}
		}
		slices.Sort(want)
		got := keys(s.v, TableName{Source: "pg1", Schema: "public", Table: "t"})
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("round %d (seed %d): chunk %s..%s keep %s: rows left %v, want %v", round, seed, ch.From, ch.To, ch.Keep, got, want)
		}
	}
}

// BenchmarkChunkEvent applies a chunk event to a partition of 250,000
// rows, as each of a million-row backfill's chunk events does on 4
// partitions: `go test -bench ChunkEvent ./sink/consumer/`.
func BenchmarkChunkEvent(b *testing.B) {
	tbl := &sources.Table{Schema: "public", Name: "t", Columns: []string{"id", "v"}, Key: []int{0}}
	v := NewView()
	enc := sink.NewEncoder("pg1", "postgres", "shop")
	for i := range 250000 {
		c := &sources.Change{Op: sources.OpRead, Table: tbl, After: vals(strconv.Itoa(i), `1`), Chunk: "c" + strconv.Itoa(i/2048)}
		if err := v.Apply("cdc.pg1.public.t.0", enc.AppendEvent(nil, c, now)); err != nil {
			b.Fatal(err)
		}
	}
	ev := enc.AppendChunkEvent(nil, &sink.Chunk{ID: "c60", Table: tbl, From: vals("122880"), To: vals("124927")}, nil, now)
	b.ResetTimer()
	for range b.N {
		if err := v.Apply("cdc.pg1.public.t.0", ev); err != nil {
			b.Fatal(err)
		}
	}
}
