package mysql

import (
	"slices"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

func TestChooseUnique(t *testing.T) {
	code := uniqueIndex{name: "code", columns: []string{"code"}, usable: true}
	pair := uniqueIndex{name: "pair", columns: []string{"a", "b"}, usable: true}
	nullable := uniqueIndex{name: "n", columns: []string{"n"}}
	named := func(ix uniqueIndex, name string) uniqueIndex { ix.name = name; return ix }
	tests := []struct {
		name      string
		indexes   []uniqueIndex
		clustered []string
		want      string // index name; empty for none
	}{
		{name: "none", indexes: []uniqueIndex{nullable}},
		{name: "fewest columns", indexes: []uniqueIndex{pair, nullable, code}, want: "code"},
		{name: "first name on a tie", indexes: []uniqueIndex{named(code, "z"), named(code, "b")}, want: "b"},
		{name: "the clustered index first", indexes: []uniqueIndex{code, pair}, clustered: []string{"b", "a"}, want: "pair"},
		{name: "clustered columns of no usable index", indexes: []uniqueIndex{pair, code}, clustered: []string{"x"}, want: "code"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ix, ok := chooseUnique(slices.Clone(tc.indexes), tc.clustered)
			if ok != (tc.want != "") || ix.name != tc.want {
				t.Errorf("chose %q (%v), want %q", ix.name, ok, tc.want)
			}
		})
	}
}

// On a real MariaDB: the unique index InnoDB clusters by is the key, in
// SEQ_IN_INDEX order; nullable, prefix and non-unique indexes are not keys;
// source.keys beats a unique index, not a primary key. (Primary keys, and
// tables with no key at all, are the conformance suite's.)
func TestKeysFromCatalog(t *testing.T) {
	srv := mysqltest.New(t)
	ctx := testCtx(t)
	if err := srv.CreateDatabase(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	execSQL(t, srv, "shop",
		`CREATE TABLE items (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE)`,
		// uk_ba is defined first, so InnoDB clusters by it although
		// code_key has fewer columns.
		`CREATE TABLE clustered (a INT NOT NULL, b VARCHAR(10) NOT NULL, code INT NOT NULL, UNIQUE KEY uk_ba (b, a), UNIQUE KEY code_key (code))`,
		`CREATE TABLE picky (n INT NULL, p VARCHAR(50) NOT NULL, m INT NOT NULL, x INT NOT NULL, y INT NOT NULL,
			UNIQUE KEY n_key (n), UNIQUE KEY p_prefix (p(5)), KEY m_plain (m), UNIQUE KEY xy (y, x))`,
		`CREATE TABLE configured (c INT NOT NULL UNIQUE, d INT)`,
		`CREATE TABLE nokey (n INT NULL UNIQUE, v INT)`)
	cfg := Config{Name: "my1", DSN: srv.DSN("shop"), Keys: map[string][]string{"shop.configured": {"d"}, "shop.items": {"code"}}}
	keys, err := Captured(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sourcetest.WantKeys(t, keys,
		"shop.clustered: unique index uk_ba (b, a), over NOT NULL columns, InnoDB's clustered index",
		"shop.configured: source.keys (d), the binlog carries full rows",
		"shop.items: primary key (id)",
		"shop.picky: unique index xy (y, x), over NOT NULL columns, InnoDB's clustered index")
	cfg.Tables = []string{"shop.items", "shop.nokey"}
	found, _ := Check(ctx, cfg)
	if problems := strings.Join(found, "\n"); !strings.Contains(problems, "unique index over NOT NULL columns") {
		t.Errorf("check does not name the unique index fix for shop.nokey:\n%s", problems)
	}
}
