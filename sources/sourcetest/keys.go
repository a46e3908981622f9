package sourcetest

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math/big"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

// CatalogKeys lists the keys of a catalog as "table: key" lines, sorted by
// table, for comparing with what a test wants.
func CatalogKeys(cat sources.Catalog) []string {
	var keys []string
	for _, k := range cat.Tables {
		keys = append(keys, k.Key.Table+": "+k.Key.String())
	}
	sort.Strings(keys)
	return keys
}

// WantKeys fails t unless the catalog's keys are want (CatalogKeys lines).
func WantKeys(t *testing.T, cat sources.Catalog, want ...string) {
	t.Helper()
	if got := CatalogKeys(cat); !slices.Equal(got, want) {
		t.Errorf("keys:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// catalog: Check shows each table's primary key in key order, not column
// order, and refuses a table without a key, naming it, as Open does;
// changes and chunks carry the key in the same order.
func catalog(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	d.recreate(t, ctx, "cat_one", "id", col{name: "id", kind: Int}, col{name: "v", kind: Text})
	d.recreate(t, ctx, "cat_pair", "b,a", col{name: "a", kind: Int}, col{name: "b", kind: Int}, col{name: "v", kind: Text})
	d.recreate(t, ctx, "cat_none", "", col{name: "v", kind: Int})
	spec, _ := d.spec(h, "catalog", "cat_one", "cat_pair")
	s := h.DB.Schema()

	pf := h.Driver.Check(ctx, spec)
	if len(pf.Problems) > 0 {
		t.Errorf("Check: %q", pf.Problems)
	}
	WantKeys(t, pf.Catalog, s+".cat_one: primary key (id)", s+".cat_pair: primary key (b, a)")

	none := spec
	none.Name += "_none"
	none.Tables = append(slices.Clone(spec.Tables), s+".cat_none")
	pf = h.Driver.Check(ctx, none)
	if p := strings.Join(pf.Problems, "\n"); !strings.Contains(p, s+".cat_none") || !strings.Contains(p, "add one") {
		t.Errorf("Check of a table without a key: problems %q, want one naming %s.cat_none and the fix", pf.Problems, s)
	}
	if src, err := h.Driver.Open(ctx, none); !errors.Is(err, sources.ErrNoPrimaryKey) {
		if err == nil {
			src.Close(ctx)
		}
		t.Errorf("Open with a table without a key: %v, want ErrNoPrimaryKey", err)
	}

	src := open(t, ctx, h.Driver, spec)
	st := startStream(t, ctx, src, "")
	d.exec(t, ctx, d.insert("cat_pair", []string{"1", "2", h.DB.String("x")}))
	c := st.change(t, ctx, onTable(s+".cat_pair"))
	if !slices.Equal(c.Table.Key, []int{1, 0}) || row(c.KeyValues()) != "2 1" {
		t.Errorf("the change's key columns %v, values %s; want b, a: 2 1", c.Table.Key, row(c.KeyValues()))
	}
	chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: s + ".cat_pair", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(chunk.Table.Key, []int{1, 0}) {
		t.Errorf("the chunk's key columns %v; want b, a", chunk.Table.Key)
	}
}

// keyCase is a table whose rows a chunked read must return in key order.
type keyCase struct {
	name  string
	table string
	cols  []col
	key   string
	rows  [][]string // literals
	want  []string   // the keys' JSON, in key order
}

// keyOrder: ReadChunk returns rows in the key order consumers reproduce
// (integers and decimals numerically, text by its UTF-8 bytes whatever
// the collation, composite keys column by column), and paging from the
// last key of each chunk, inclusive, reads every row exactly once: the
// backfill relies on it. A key of another type is refused, by name.
func keyOrder(t *testing.T, h Harness) {
	ctx := testCtx(t)
	d := dialect{h.DB}
	var cases []keyCase

	ints := []int64{100, -5, 2147483647, 1, -2147483648, 10, 2, 0}
	bigs := []int64{9223372036854775807, -9223372036854775808, 9007199254740993, 9007199254740992, 0, -1}
	for _, c := range []struct {
		table string
		kind  Kind
		vals  []int64
	}{{"k_int", Int, ints}, {"k_bigint", BigInt, bigs}} {
		kc := keyCase{name: string(c.kind), table: c.table, cols: []col{{name: "id", kind: c.kind}, {name: "v", kind: Text}}, key: "id"}
		for _, v := range c.vals {
			kc.rows = append(kc.rows, []string{strconv.FormatInt(v, 10), h.DB.String("v")})
		}
		for _, v := range slices.Sorted(slices.Values(c.vals)) {
			kc.want = append(kc.want, strconv.FormatInt(v, 10))
		}
		cases = append(cases, kc)
	}

	decs := []string{"10", "-100", "0.25", "-1.5", "2", "10.0000000001", "99999999999999999999.1", "-0.0000000001"}
	dec := keyCase{name: "decimal", table: "k_decimal", cols: []col{{name: "d", kind: Decimal}}, key: "d"}
	rats := map[string]*big.Rat{}
	for _, v := range decs {
		dec.rows = append(dec.rows, []string{v})
		rats[v], _ = new(big.Rat).SetString(v)
	}
	slices.SortFunc(decs, func(a, b string) int { return rats[a].Cmp(rats[b]) })
	for _, v := range decs {
		dec.want = append(dec.want, strconv.Quote(rats[v].FloatString(10)))
	}
	cases = append(cases, dec)

	// Composite, declared in the other order than the columns.
	comp := keyCase{name: "composite", table: "k_composite", cols: []col{{name: "a", kind: Int}, {name: "b", kind: BigInt}}, key: "b,a",
		rows: [][]string{{"1", "2"}, {"2", "1"}, {"1", "1"}, {"3", "0"}, {"-1", "2"}, {"10", "-7"}},
		want: []string{"-7 10", "0 3", "1 1", "1 2", "2 -1", "2 1"}}
	cases = append(cases, comp)

	type named struct {
		name string
		n    int
	}
	texts := []named{
		{"a", 1}, {"a", 2}, {"a", 10}, {"a", -5}, {"A", 3}, {"b", 4}, {"B", 5}, {"Z", 6}, {"z", 7},
		{"ab", 8}, {"a b", 9}, {"a\t", 11}, {"", 12}, {"é", 13}, {"É", 14}, {"€", 15}, {"ß", 16},
		{"ss", 17}, {"☃", 18}, {"日本", 19}, {"😀", 20}, {"zz", 21}, {"Ab", 22}, {"e\u0301", 23},
	}
	sorted := slices.Clone(texts)
	slices.SortFunc(sorted, func(a, b named) int {
		if c := strings.Compare(a.name, b.name); c != 0 { // Go compares strings bytewise
			return c
		}
		return a.n - b.n
	})
	collations := h.DB.TextKeys()
	if len(collations) == 0 {
		t.Error("Database.TextKeys is empty: give the type of at least one text key column")
	}
	for i, name := range slices.Sorted(maps.Keys(collations)) {
		kc := keyCase{name: "text " + name, table: "k_text" + itoa(i), cols: []col{{name: "name", sqlType: collations[name]}, {name: "n", kind: Int}}, key: "name,n"}
		for _, r := range texts {
			kc.rows = append(kc.rows, []string{h.DB.String(r.name), itoa(r.n)})
		}
		for _, r := range sorted {
			b, _ := json.Marshal(r.name)
			kc.want = append(kc.want, string(b)+" "+itoa(r.n))
		}
		cases = append(cases, kc)
	}

	var tables []string
	for _, c := range cases {
		d.recreate(t, ctx, c.table, c.key, c.cols...)
		d.exec(t, ctx, d.insert(c.table, c.rows...))
		tables = append(tables, c.table)
	}
	d.recreate(t, ctx, "k_timestamp", "at", col{name: "at", kind: Timestamp})
	d.exec(t, ctx, d.insert("k_timestamp", []string{h.DB.String("2024-02-29 13:45:06")}))
	spec, _ := d.spec(h, "keys", append(tables, "k_timestamp")...)
	src := open(t, ctx, h.Driver, spec)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			table := h.DB.Schema() + "." + c.table
			for _, limit := range []int{3, 1000} {
				shape, rows := PageAll(t, ctx, src, table, limit)
				var got []string
				for _, r := range rows {
					got = append(got, row(key(shape, r)))
				}
				if !slices.Equal(got, c.want) {
					t.Errorf("chunks of %d read the keys\n%q\nwant\n%q", limit, got, c.want)
				}
			}
			if n, err := src.EstimateRows(ctx, table); err != nil || n <= 0 {
				t.Errorf("EstimateRows = %d, %v; want about %d", n, err, len(c.rows))
			}
		})
	}

	t.Run("unsupported", func(t *testing.T) {
		table := h.DB.Schema() + ".k_timestamp"
		_, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: table, Limit: 10})
		if !errors.Is(err, sources.ErrUnsupportedKey) || !strings.Contains(err.Error(), table) || !strings.Contains(err.Error(), " at ") {
			t.Errorf("ReadChunk of a timestamp key: %v, want ErrUnsupportedKey naming %s and its column at", err, table)
		}
	})
}

// PageAll reads a table in chunks of limit rows, each from the last key of
// the one before, inclusive, as the backfill does, and returns the rows
// once each. It fails t when a chunk does not start with its boundary row
// or the table's shape changes between chunks.
func PageAll(t *testing.T, ctx context.Context, src sources.Backfiller, table string, limit int) (*sources.Table, [][]sources.Value) {
	t.Helper()
	var all [][]sources.Value
	var shape *sources.Table
	var from []sources.Value
	for range 10000 {
		chunk, err := src.ReadChunk(ctx, sources.ChunkQuery{Table: table, From: from, Limit: limit})
		if err != nil {
			t.Fatalf("ReadChunk(%s from %s): %v", table, from, err)
		}
		if shape == nil {
			shape = chunk.Table
		} else if !slices.Equal(chunk.Table.Columns, shape.Columns) || chunk.Table.Version != shape.Version {
			t.Fatalf("shape changed between chunks: %+v then %+v", shape, chunk.Table)
		}
		rows := chunk.Rows
		if from != nil {
			if len(rows) == 0 || !slices.EqualFunc(key(shape, rows[0]), from, equal) {
				t.Fatalf("chunk from %s does not start with its boundary row: %s", from, rows)
			}
			rows = rows[1:]
		}
		all = append(all, rows...)
		if len(chunk.Rows) < limit {
			return shape, all
		}
		from = key(shape, chunk.Rows[len(chunk.Rows)-1])
	}
	t.Fatal("paging does not end")
	return nil, nil
}

// key returns a row's key values, in key order.
func key(shape *sources.Table, row []sources.Value) []sources.Value {
	k := make([]sources.Value, len(shape.Key))
	for i, c := range shape.Key {
		k[i] = row[c]
	}
	return k
}
