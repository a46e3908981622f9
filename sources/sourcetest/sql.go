package sourcetest

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

// dialect writes the suite's statements with a Database's types and
// quoting.
type dialect struct{ db Database }

// col is a column of a table the suite creates: of a kind of value, or
// of a type as the database names it (a text key's collation).
type col struct {
	name    string
	kind    Kind
	sqlType string
}

func (d dialect) typeOf(c col) string {
	if c.sqlType != "" {
		return c.sqlType
	}
	return d.db.Type(c.kind)
}

// table is the qualified, quoted name of one of the suite's tables.
func (d dialect) table(name string) string {
	return d.db.Ident(d.db.Schema()) + "." + d.db.Ident(name)
}

// recreate drops table name if it is there (RunParts may run a part
// again) and creates it anew (create).
func (d dialect) recreate(t *testing.T, ctx context.Context, name, key string, cols ...col) {
	t.Helper()
	d.exec(t, ctx, "DROP TABLE IF EXISTS "+d.table(name))
	d.exec(t, ctx, d.create(name, key, cols...))
}

// capture makes table name, keyed by its first column, and opens a
// source of it for part: it returns the source, its spec and the table's
// qualified name.
func (d dialect) capture(t *testing.T, ctx context.Context, h Harness, part, name string, cols ...col) (sources.Source, sources.Spec, string) {
	t.Helper()
	d.recreate(t, ctx, name, cols[0].name, cols...)
	spec, table := d.spec(h, part, name)
	return open(t, ctx, h.Driver, spec), spec, table
}

// create is CREATE TABLE name with cols and a primary key of the columns
// key names, in that order; no key without it.
func (d dialect) create(name, key string, cols ...col) string {
	var defs []string
	for _, c := range cols {
		def := d.db.Ident(c.name) + " " + d.typeOf(c)
		if key != "" && strings.Contains(","+key+",", ","+c.name+",") {
			def += " NOT NULL"
		}
		defs = append(defs, def)
	}
	if key != "" {
		var k []string
		for _, c := range strings.Split(key, ",") {
			k = append(k, d.db.Ident(c))
		}
		defs = append(defs, "PRIMARY KEY ("+strings.Join(k, ", ")+")")
	}
	return "CREATE TABLE " + d.table(name) + " (" + strings.Join(defs, ", ") + ")"
}

// insert is INSERT INTO name VALUES of rows of literals.
func (d dialect) insert(name string, rows ...[]string) string {
	var vals []string
	for _, r := range rows {
		vals = append(vals, "("+strings.Join(r, ", ")+")")
	}
	return "INSERT INTO " + d.table(name) + " VALUES " + strings.Join(vals, ", ")
}

// exec runs the statements in one transaction and fails the test on error.
func (d dialect) exec(t *testing.T, ctx context.Context, stmts ...string) {
	t.Helper()
	if err := d.db.Exec(ctx, stmts...); err != nil {
		t.Fatalf("%.200s: %v", strings.Join(stmts, "; "), err)
	}
}

// spec is h.Spec for a part's source capturing tables, and the first
// table's qualified name.
func (d dialect) spec(h Harness, part string, tables ...string) (sources.Spec, string) {
	spec := h.Spec
	spec.Name = h.Spec.Name + "_" + part
	spec.Tables = nil
	for _, tbl := range tables {
		spec.Tables = append(spec.Tables, d.db.Schema()+"."+tbl)
	}
	return spec, spec.Tables[0]
}

func itoa(i int) string { return strconv.Itoa(i) }
