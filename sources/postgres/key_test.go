package postgres

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

func TestChooseKey(t *testing.T) {
	pk := index{name: "t_pkey", primary: true, unique: true, columns: []string{"id"}, notNull: []bool{true}}
	code := index{name: "t_code_key", unique: true, columns: []string{"code"}, notNull: []bool{true}}
	pair := index{name: "t_a_b_key", unique: true, columns: []string{"a", "b"}, notNull: []bool{true, true}}
	nullable := index{name: "t_n_key", unique: true, columns: []string{"n"}, notNull: []bool{false}}
	partial := index{name: "a_partial", unique: false, columns: []string{"p"}, notNull: []bool{true}}
	ident := func(ix index) index { ix.identity = true; return ix }
	named := func(ix index, name string) index { ix.name = name; return ix }

	tests := []struct {
		name       string
		identity   byte
		indexes    []index
		configured []string
		want       []string
		from, why  string
		problem    []string // fragments; none means no problem
	}{
		{name: "primary key", identity: 'd', indexes: []index{code, pk}, want: []string{"id"}, from: "primary key"},
		{name: "primary key beats source.keys", identity: 'f', indexes: []index{pk}, configured: []string{"x"}, want: []string{"id"}, from: "primary key"},
		{name: "primary key in the identity index", identity: 'i', indexes: []index{pk, ident(index{name: "t_id_code", unique: true, columns: []string{"code", "id"}, notNull: []bool{true, true}})},
			want: []string{"id"}, from: "primary key"},
		{name: "identity index without the primary key", identity: 'i', indexes: []index{pk, ident(code)},
			problem: []string{"public.t", "USING INDEX t_code_key (code)", `ALTER TABLE "public"."t" REPLICA IDENTITY DEFAULT`}},
		{name: "using index", identity: 'i', indexes: []index{pair, ident(code)}, want: []string{"code"}, from: "unique index t_code_key", why: "replica identity USING INDEX"},
		{name: "using index keeps index order", identity: 'i', indexes: []index{ident(named(pair, "t_b_a")), code}, want: []string{"a", "b"}, from: "unique index t_b_a"},
		{name: "source.keys within the identity index", identity: 'i', indexes: []index{ident(pair)}, configured: []string{"b"}, want: []string{"b"}, from: "source.keys", why: "replica identity USING INDEX t_a_b_key"},
		{name: "source.keys outside the identity index", identity: 'i', indexes: []index{ident(code)}, configured: []string{"other"},
			problem: []string{"source.keys lists (other)", "USING INDEX t_code_key", "REPLICA IDENTITY FULL"}},
		{name: "identity index dropped", identity: 'i', indexes: []index{code}, problem: []string{"replica identity index is gone", "REPLICA IDENTITY USING INDEX"}},
		{name: "full with source.keys", identity: 'f', indexes: []index{code}, configured: []string{"x", "y"}, want: []string{"x", "y"}, from: "source.keys", why: "replica identity FULL"},
		{name: "full picks fewest columns", identity: 'f', indexes: []index{pair, code, nullable}, want: []string{"code"}, from: "unique index t_code_key", why: "replica identity FULL"},
		{name: "full picks first name on a tie", identity: 'f', indexes: []index{named(code, "z"), named(code, "b"), named(code, "m")}, want: []string{"code"}, from: "unique index b"},
		{name: "full skips nullable and non-unique", identity: 'f', indexes: []index{nullable, partial}},
		{name: "default with a unique index", identity: 'd', indexes: []index{pair, nullable},
			problem: []string{"public.t has no primary key", "DEFAULT", `ALTER TABLE "public"."t" REPLICA IDENTITY USING INDEX "t_a_b_key"`}},
		{name: "nothing with a unique index", identity: 'n', indexes: []index{code}, problem: []string{"NOTHING", "REPLICA IDENTITY USING INDEX"}},
		{name: "default with source.keys", identity: 'd', configured: []string{"x"}, problem: []string{"not FULL", "REPLICA IDENTITY FULL"}},
		{name: "no key at all", identity: 'd', indexes: []index{nullable}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := chooseKey("public.t", tc.identity, tc.indexes, tc.configured, tc.configured != nil)
			if len(tc.problem) > 0 {
				if k.columns != nil || k.problem == "" {
					t.Fatalf("got key %v (%q), want a problem", k.columns, k.problem)
				}
				for _, f := range tc.problem {
					if !strings.Contains(k.problem, f) {
						t.Errorf("problem %q does not name %q", k.problem, f)
					}
				}
				return
			}
			if k.problem != "" || !slices.Equal(k.columns, tc.want) {
				t.Fatalf("got key %v (problem %q), want %v", k.columns, k.problem, tc.want)
			}
			if tc.from != "" && k.from != tc.from || tc.why != "" && k.why != tc.why {
				t.Errorf("got from %q why %q, want %q %q", k.from, k.why, tc.from, tc.why)
			}
		})
	}
}

// The catalog read behind chooseKey: index order, INCLUDE columns left
// out, replica identity USING INDEX and FULL, and the fix sluice check
// names for a unique index without it, on a real server. (Primary keys,
// and tables with no key at all, are the conformance suite's.)
func TestKeysFromCatalog(t *testing.T) {
	pg := pgtest.New(t)
	ctx := testCtx(t)
	if err := pg.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Exec(ctx, "shop", `CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE);
		CREATE TABLE byidx (a int NOT NULL, b text NOT NULL, c int, note text);
		CREATE UNIQUE INDEX byidx_b_a ON byidx (b, a) INCLUDE (c);
		ALTER TABLE byidx REPLICA IDENTITY USING INDEX byidx_b_a;
		CREATE TABLE byfull (x int NOT NULL, y int NOT NULL, z int, UNIQUE (x, y), UNIQUE (z));
		ALTER TABLE byfull REPLICA IDENTITY FULL;
		CREATE TABLE loose (code text NOT NULL UNIQUE, v int);
		CREATE TABLE nothing (v int)`); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "pg1", DSN: pg.DSN("shop"), Tables: []string{"public.items", "public.byidx", "public.byfull"}, Log: slog.New(slog.DiscardHandler)}
	keys, err := Captured(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sourcetest.WantKeys(t, keys,
		"public.byfull: unique index byfull_x_y_key (x, y), replica identity FULL",
		"public.byidx: unique index byidx_b_a (b, a), replica identity USING INDEX",
		"public.items: primary key (id)")

	cfg.Tables = append(cfg.Tables, "public.loose")
	found, _, _ := Check(ctx, cfg)
	if problems := strings.Join(found, "\n"); !strings.Contains(problems, `REPLICA IDENTITY USING INDEX "loose_code_key"`) {
		t.Errorf("check does not name the fix for loose:\n%s", problems)
	}
	conn, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := discoverTables(ctx, conn, cfg); !errors.Is(err, sources.ErrNoPrimaryKey) {
		t.Errorf("discoverTables = %v, want ErrNoPrimaryKey", err)
	}
	// Without source.tables, tables without a usable key are left out.
	cfg.Tables = nil
	infos, err := discoverTables(ctx, conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if names := tablesOf(infos); !slices.Equal(names, []string{"public.byfull", "public.byidx", "public.items"}) {
		t.Errorf("tables in scope: %v", names)
	}
}
