package backfill

import (
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

func vals(s ...string) []sources.Value {
	out := make([]sources.Value, len(s))
	for i, v := range s {
		out[i] = sources.Value(v)
	}
	return out
}

func TestBoundWritesDecimalsAsNumbers(t *testing.T) {
	tbl := &sources.Table{Columns: []string{"region", "amount", "id"}, Types: []string{"text", "numeric", "int8"},
		Kinds: []sources.Kind{sources.KindString, sources.KindDecimal, sources.KindInteger}, Key: []int{0, 1, 2}}
	got := bound(tbl, vals(`"eu"`, `"12.50"`, `7`))
	want := []string{`"eu"`, `12.50`, `7`}
	for i := range want {
		if string(got[i]) != want[i] {
			t.Fatalf("bound = %s, want %v", got, want)
		}
	}
	if bound(tbl, nil) != nil {
		t.Fatal("an open end must stay nil")
	}
	// The kind decides, not the type's name: a decimal named otherwise is
	// a number, and a table without kinds keeps its strings.
	otherDB := &sources.Table{Columns: []string{"d"}, Types: []string{"DEC(10,2)"}, Kinds: []sources.Kind{sources.KindDecimal}, Key: []int{0}}
	if got := bound(otherDB, vals(`"-3.25"`)); string(got[0]) != `-3.25` {
		t.Fatalf("decimal bound = %s", got[0])
	}
	noKinds := &sources.Table{Columns: []string{"d"}, Types: []string{"numeric"}, Key: []int{0}}
	if got := bound(noKinds, vals(`"-3.25"`)); string(got[0]) != `"-3.25"` {
		t.Fatalf("bound of a column of unknown kind = %s, want the value as it is", got[0])
	}
}

func TestInRange(t *testing.T) {
	for _, c := range []struct {
		key, from, to []sources.Value
		want          bool
	}{
		{vals(`5`), vals(`1`), vals(`10`), true},
		{vals(`1`), vals(`1`), vals(`10`), true},
		{vals(`10`), vals(`1`), vals(`10`), true},
		{vals(`11`), vals(`1`), vals(`10`), false},
		{vals(`0`), vals(`1`), nil, false},
		{vals(`99999999999999999999`), vals(`1`), nil, true},
		{vals(`"9.5"`), vals(`10`), nil, false}, // numerically, not as text
		{vals(`"B"`), vals(`"a"`), nil, false},  // bytewise: "B" < "a"
		{vals(`"eu"`, `3`), vals(`"eu"`, `2`), vals(`"eu"`, `9`), true},
		{vals(`"eu"`, `10`), vals(`"eu"`, `2`), vals(`"eu"`, `9`), false},
		{vals(`"ü"`, `1`), vals(`"z"`, `1`), nil, true},
		{vals(`"x"`), vals(`1`), nil, true}, // cannot compare: kept, which is safe
	} {
		if got := inRange(c.key, c.from, c.to); got != c.want {
			t.Errorf("inRange(%s, %s, %s) = %v, want %v", c.key, c.from, c.to, got, c.want)
		}
	}
}

func TestKeysAndEstimates(t *testing.T) {
	if got := jobKey("pg1", "public.order lines"); got != "backfill.pg1.public.order_lines" {
		t.Errorf("jobKey = %s", got)
	}
	for _, c := range []struct {
		rows int64
		size int
		want int64
	}{{0, 100, 1}, {99, 100, 1}, {100, 100, 2}, {1000000, 2048, 489}} {
		if got := (Job{Estimate: c.rows, ChunkSize: c.size}).ChunksEstimated(); got != c.want {
			t.Errorf("%d rows in chunks of %d: %d chunks, want %d", c.rows, c.size, got, c.want)
		}
	}
}
