package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

// The backfill manager finds the advice by this interface: a renamed
// method would silently stop the warning.
var _ backfill.ChunkAdvisor = (*Source)(nil)

func TestServesChunkOrder(t *testing.T) {
	name := keyColumn{name: "name", attnum: 1, collated: true}
	n := keyColumn{name: "n", attnum: 2}
	id := keyColumn{name: "id", attnum: 3}
	c := func(cols []int16, colls []uint32) indexShape {
		ix := indexShape{columns: cols, collations: colls, keyAtts: len(cols)}
		for range cols {
			ix.options = append(ix.options, 0)
			ix.defaults = append(ix.defaults, true)
		}
		return ix
	}
	desc := c([]int16{1, 2}, []uint32{cCollation, 0})
	desc.options[1] = 3 // DESC NULLS FIRST
	pattern := c([]int16{1}, []uint32{cCollation})
	pattern.defaults[0] = false // text_pattern_ops: ~<~, not <
	include := c([]int16{1, 2}, []uint32{cCollation, 0})
	include.keyAtts = 1 // (name) INCLUDE (n)

	tests := []struct {
		name string
		ix   indexShape
		key  []keyColumn
		want bool
	}{
		{"C index of the text key", c([]int16{1}, []uint32{cCollation}), []keyColumn{name}, true},
		{"primary key in an ICU collation", c([]int16{1}, []uint32{12481}), []keyColumn{name}, false},
		{"POSIX is another collation to the planner", c([]int16{1}, []uint32{951}), []keyColumn{name}, false},
		{"the database's default, even where it is C", c([]int16{1}, []uint32{100}), []keyColumn{name}, false},
		{"composite, C text column first", c([]int16{1, 2}, []uint32{cCollation, 0}), []keyColumn{name, n}, true},
		{"more columns after the key's", c([]int16{1, 2, 3}, []uint32{cCollation, 0, 0}), []keyColumn{name, n}, true},
		{"key columns in another order", c([]int16{2, 1}, []uint32{0, cCollation}), []keyColumn{name, n}, false},
		{"only a prefix of the key", c([]int16{1}, []uint32{cCollation}), []keyColumn{name, n}, false},
		{"a descending column", desc, []keyColumn{name, n}, false},
		{"a pattern operator class", pattern, []keyColumn{name}, false},
		{"a key column only INCLUDEd", include, []keyColumn{name, n}, false},
		{"an expression", c([]int16{0}, []uint32{cCollation}), []keyColumn{name}, false},
		{"integer key, its primary key", c([]int16{3}, []uint32{0}), []keyColumn{id}, true},
	}
	for _, tt := range tests {
		if got := servesChunkOrder(tt.ix, tt.key); got != tt.want {
			t.Errorf("%s: servesChunkOrder = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestTruncateIdentifier(t *testing.T) {
	long := strings.Repeat("é", 40) // 80 bytes
	got := truncateIdentifier(long, maxIdentifier-len(indexSuffix))
	if !utf8.ValidString(got) || len(got) > maxIdentifier-len(indexSuffix) || len(got) < maxIdentifier-len(indexSuffix)-1 {
		t.Errorf("truncateIdentifier = %q (%d bytes)", got, len(got))
	}
	if got := truncateIdentifier("items", 54); got != "items" {
		t.Errorf("truncateIdentifier(items) = %q", got)
	}
}

// The tables of the collation tests: text keys in an ICU collation, with
// one column and with two, keys that chunks read in index order already,
// and names that must be quoted, cut and numbered.
const collationTables = `
	CREATE TABLE icu (name text COLLATE "en-x-icu" PRIMARY KEY, payload text);
	CREATE TABLE pair (name text COLLATE "en-x-icu", n int, payload text, PRIMARY KEY (name, n));
	CREATE TABLE posix (name text COLLATE "POSIX" PRIMARY KEY, payload text);
	CREATE TABLE ctab (name text COLLATE "C" PRIMARY KEY, payload text);
	CREATE TABLE ints (id bigint PRIMARY KEY, name text COLLATE "en-x-icu");
	CREATE TABLE "Odd ""Name"" ÿ" ("Key" varchar(20) PRIMARY KEY);
	CREATE TABLE taken (name text PRIMARY KEY);
	CREATE TABLE taken_sluice_c (v int);
	CREATE TABLE dup (name text COLLATE "en-x-icu" PRIMARY KEY, v int);
	INSERT INTO dup VALUES ('a', 1), ('b', 1);`

// longTable is a table name of 60 bytes with two-byte characters: its
// index name is cut to 63 bytes on a character's boundary.
var longTable = strings.Repeat("é", 30)

// sluice check advises, for each captured table whose text key no index
// orders bytewise, the statement that creates one, and after exactly that
// statement the advice is gone. Keys read in index order already (C
// collation, integers) never get it.
func TestCheckAdvisesChunkIndex(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	ctx := testCtx(t)
	if err := srv.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "shop", collationTables+
		fmt.Sprintf(`CREATE TABLE %s (id text PRIMARY KEY);`, pgx.Identifier{longTable}.Sanitize())); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, srv.DSN("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// A CREATE INDEX CONCURRENTLY that failed leaves an invalid index
	// under the name the note would choose.
	if _, err := conn.Exec(ctx, "CREATE UNIQUE INDEX CONCURRENTLY dup_sluice_c ON dup (v)"); err == nil {
		t.Fatal("a unique index over duplicates was built")
	}
	cutName := truncateIdentifier(longTable, maxIdentifier-len(indexSuffix)) + indexSuffix
	want := map[string][]string{
		"public.icu":  {`CREATE INDEX CONCURRENTLY "icu_sluice_c" ON "public"."icu" ("name" COLLATE "C")`},
		"public.pair": {`CREATE INDEX CONCURRENTLY "pair_sluice_c" ON "public"."pair" ("name" COLLATE "C", "n")`},
		// The planner takes POSIX for another collation than C: its
		// primary key does not serve ORDER BY ... COLLATE "C".
		"public.posix":        {`CREATE INDEX CONCURRENTLY "posix_sluice_c" ON "public"."posix" ("name" COLLATE "C")`},
		`public.Odd "Name" ÿ`: {`CREATE INDEX CONCURRENTLY "Odd ""Name"" ÿ_sluice_c" ON "public"."Odd ""Name"" ÿ" ("Key" COLLATE "C")`},
		"public.taken":        {`CREATE INDEX CONCURRENTLY "taken_sluice_c2" ON "public"."taken" ("name" COLLATE "C")`},
		"public.dup":          {`DROP INDEX CONCURRENTLY "public"."dup_sluice_c"`, `CREATE INDEX CONCURRENTLY "dup_sluice_c" ON "public"."dup" ("name" COLLATE "C")`},
		"public." + longTable: {fmt.Sprintf(`CREATE INDEX CONCURRENTLY "%s" ON "public"."%s" ("id" COLLATE "C")`, cutName, longTable)},
	}
	cfg := Config{Name: "pg1", DSN: srv.DSN("shop"), Log: slog.New(slog.DiscardHandler),
		Tables: []string{"public.icu", "public.pair", "public.posix", "public.ctab", "public.ints", `public.Odd "Name" ÿ`,
			"public.taken", "public.dup", "public." + longTable}}
	if len(cutName) > maxIdentifier || !utf8.ValidString(cutName) {
		t.Fatalf("index name %q: %d bytes", cutName, len(cutName))
	}

	problems, notes, _ := Check(ctx, cfg)
	if len(problems) > 0 {
		t.Fatalf("problems: %q", problems)
	}
	if len(notes) != len(want) {
		t.Errorf("%d notes, want %d (one per table in want):\n%s", len(notes), len(want), strings.Join(notes, "\n"))
	}
	for table, stmts := range want {
		note := noteOf(notes, table)
		if note == "" {
			t.Errorf("no note for %s:\n%s", table, strings.Join(notes, "\n"))
			continue
		}
		if !strings.Contains(note, "backfill otherwise sorts the rest of the table for every chunk") {
			t.Errorf("note for %s does not say why: %s", table, note)
		}
		// The statement ends the note: what the operator copies.
		printed := note[strings.LastIndex(note, ": ")+2:]
		if printed != strings.Join(stmts, "; ") {
			t.Errorf("note for %s advises\n  %s\nwant\n  %s", table, printed, strings.Join(stmts, "; "))
			continue
		}
		for _, stmt := range strings.Split(printed, "; ") {
			if _, err := conn.Exec(ctx, stmt); err != nil {
				t.Fatalf("run the advised %s: %v", stmt, err)
			}
		}
	}

	problems, notes, _ = Check(ctx, cfg)
	if len(problems) > 0 || len(notes) > 0 {
		t.Errorf("after the advised statements: problems %q, notes:\n%s", problems, strings.Join(notes, "\n"))
	}
}

// noteOf returns the note about table, "" when there is none.
func noteOf(notes []string, table string) string {
	for _, n := range notes {
		if strings.HasPrefix(n, "table "+table+": ") {
			return n
		}
	}
	return ""
}

// planNode is a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	Type  string     `json:"Node Type"`
	Index string     `json:"Index Name"`
	Plans []planNode `json:"Plans"`
}

// walk calls f on n and every node below it.
func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}

// explainChunk plans the SELECT ReadChunk runs for q, with its parameters.
func explainChunk(ctx context.Context, t *testing.T, s *Source, q sources.ChunkQuery) planNode {
	t.Helper()
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	info, err := s.userTable(q.Table)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sql, params, err := s.chunkSQLLocked(ctx, conn, info, q)
	if err != nil {
		t.Fatal(err)
	}
	res := conn.PgConn().ExecParams(ctx, "EXPLAIN (FORMAT JSON) "+sql, params, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatalf("EXPLAIN %s: %v", sql, res.Err)
	}
	var plans []struct{ Plan planNode }
	if err := json.Unmarshal(res.Rows[0][0], &plans); err != nil || len(plans) != 1 {
		t.Fatalf("EXPLAIN %s: %v: %s", sql, err, res.Rows[0][0])
	}
	return plans[0].Plan
}

// indexServes tells whether plan reads the table through index without
// sorting: what a linear backfill takes.
func indexServes(plan planNode, index string) bool {
	scanned, sorted := false, false
	plan.walk(func(n planNode) {
		switch {
		case strings.Contains(n.Type, "Sort"):
			sorted = true
		case (n.Type == "Index Scan" || n.Type == "Index Only Scan") && n.Index == index:
			scanned = true
		}
	})
	return scanned && !sorted
}

// Once the index a note advises exists, the planner serves every chunk's
// SELECT, first and later ones, by it without sorting; the same SELECT of
// a table without it sorts (the canary: the check below would catch an
// index it does not use).
func TestAdvisedIndexServesChunks(t *testing.T) {
	t.Parallel()
	srv := pgtest.New(t)
	ctx := testCtx(t)
	if err := srv.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	// Keys of both cases and digits: C and en-x-icu order them apart.
	const key = `translate(md5(g::text), '0123456789abcdef', 'aB3dEf6hIj0LmN9p')`
	if err := srv.Exec(ctx, "shop", collationTables+`
		CREATE TABLE bare (name text COLLATE "en-x-icu" PRIMARY KEY, payload text);
		INSERT INTO icu SELECT `+key+`, repeat('x', 80) FROM generate_series(1, 20000) g;
		INSERT INTO bare SELECT * FROM icu;
		INSERT INTO posix SELECT * FROM icu;
		INSERT INTO pair SELECT `+key+`, g % 3, repeat('x', 80) FROM generate_series(1, 20000) g;`); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, Config{Name: "pg1", DSN: srv.DSN("shop"), Log: slog.New(slog.DiscardHandler),
		Tables: []string{"public.icu", "public.pair", "public.bare", "public.posix"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	conn, err := pgx.Connect(ctx, srv.DSN("shop"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	for _, table := range []string{"public.icu", "public.pair"} {
		why, fix, err := s.ChunkAdvice(ctx, table)
		if err != nil || fix == "" || !strings.Contains(why, `has collation "en-x-icu"`) {
			t.Fatalf("ChunkAdvice(%s) = %q, %q, %v; want the index", table, why, fix, err)
		}
		if _, err := conn.Exec(ctx, fix); err != nil {
			t.Fatalf("%s: %v", fix, err)
		}
		if why, fix, err := s.ChunkAdvice(ctx, table); why != "" || fix != "" || err != nil {
			t.Errorf("ChunkAdvice(%s) after the index = %q, %q, %v; want nothing", table, why, fix, err)
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		t.Fatal(err)
	}

	// A later chunk's cursor: the key a quarter into the table in C order.
	// The text column comes first.
	cursor := func(table string, cols ...string) []sources.Value {
		t.Helper()
		order := slices.Clone(cols)
		order[0] += ` COLLATE "C"`
		row := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT %s FROM %s ORDER BY %s OFFSET 5000 LIMIT 1",
			strings.Join(cols, ", "), table, strings.Join(order, ", "))).Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		vals := make([]sources.Value, len(row))
		for i, v := range row {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			vals[i] = b
		}
		return vals
	}
	for _, c := range []struct {
		table, index string
		from         []sources.Value
		served       bool
	}{
		{"public.icu", "icu_sluice_c", nil, true},
		{"public.icu", "icu_sluice_c", cursor("icu", "name"), true},
		{"public.pair", "pair_sluice_c", nil, true},
		{"public.pair", "pair_sluice_c", cursor("pair", "name", "n"), true},
		{"public.bare", "bare_pkey", nil, false},
		{"public.bare", "bare_pkey", cursor("bare", "name"), false},
		{"public.posix", "posix_pkey", cursor("posix", "name"), false},
	} {
		plan := explainChunk(ctx, t, s, sources.ChunkQuery{Table: c.table, From: c.from, Limit: 2048})
		if got := indexServes(plan, c.index); got != c.served {
			t.Errorf("chunk of %s from %s: served by %s without a sort = %v, want %v; plan %+v", c.table, c.from, c.index, got, c.served, plan)
		}
	}
}
