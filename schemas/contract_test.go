package schemas

import (
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

func TestContractCheck(t *testing.T) {
	no := false
	zero, hundred := 0.0, 100.0
	k, err := NewContracts(map[string]Contract{"public.orders": {Policy: "halt", Columns: map[string]ColumnPolicy{
		"id":     {Type: "integer", Required: true},
		"status": {Type: "string", Nullable: &no, Enum: []string{"new", "paid"}},
		"amount": {Type: "number", Min: &zero, Max: &hundred},
		"gone":   {Required: true},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	orders := &sources.Table{Schema: "public", Name: "orders", Columns: []string{"id", "status", "amount", "gone"}, Key: []int{0}}
	for _, tc := range []struct {
		row  []string
		want string // a reason's fragment, "" when the row keeps the contract
	}{
		{[]string{`1`, `"new"`, `"99.99"`, `true`}, ""},
		{[]string{`1`, `"paid"`, `100`, `null`}, ""},
		{[]string{`1`, `"new"`, `<nil>`, `1`}, ""}, // unchanged TOAST: not checked
		{[]string{`1.5`, `"new"`, `1`, `1`}, "column id is 1.5, the contract says integer"},
		{[]string{`1`, `null`, `1`, `1`}, "column status is null, the contract says not null"},
		{[]string{`1`, `"lost"`, `1`, `1`}, "not one of [new paid]"},
		{[]string{`1`, `"new"`, `"100.01"`, `1`}, "above the maximum 100"},
		{[]string{`1`, `"new"`, `-0.5`, `1`}, "below the minimum 0"},
		{[]string{`1`, `"new"`, `"abc"`, `1`}, "the contract says number"},
		{[]string{`1`, `7`, `1`, `1`}, "the contract says string"},
	} {
		c := &sources.Change{Op: sources.OpCreate, Table: orders, After: vals(tc.row...)}
		policy, reasons := k.Check(c)
		got := strings.Join(reasons, "; ")
		if tc.want == "" && policy != "" || tc.want != "" && (policy != Halt || !strings.Contains(got, tc.want)) {
			t.Errorf("row %v: policy %q, reasons %q; want %q", tc.row, policy, got, tc.want)
		}
	}
	// A required column the shape lacks breaks every row; deletes carry
	// no row to check.
	short := &sources.Table{Schema: "public", Name: "orders", Columns: []string{"id"}, Key: []int{0}}
	if _, r := k.Check(&sources.Change{Op: sources.OpCreate, Table: short, After: vals(`1`)}); !strings.Contains(strings.Join(r, ";"), "gone is required") {
		t.Errorf("missing required column: %v", r)
	}
	if p, _ := k.Check(&sources.Change{Op: sources.OpDelete, Table: short, Before: vals(`1`)}); p != "" {
		t.Error("a delete was checked")
	}
}

func TestContractCheckShape(t *testing.T) {
	k, err := NewContracts(map[string]Contract{"public.orders": {Columns: map[string]ColumnPolicy{
		"status": {Type: "string", Required: true}, "amount": {Type: "number"}, "n": {Type: "integer"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	// The drivers' kinds of these PostgreSQL types.
	kinds := map[string]sources.Kind{"int4": sources.KindInteger, "int8": sources.KindInteger, "numeric": sources.KindDecimal,
		"float8": sources.KindFloat, "text": sources.KindString, "varchar": sources.KindString, "mood": sources.KindOther}
	shape := func(cols ...string) Shape {
		s := Shape{Schema: "public", Table: "orders"}
		for _, c := range cols {
			name, typ, _ := strings.Cut(c, ":")
			s.Columns = append(s.Columns, Column{Name: name, Type: typ, Kind: kinds[typ]})
		}
		return s
	}
	old := shape("id:int4", "status:text", "amount:numeric", "n:int4")
	for _, tc := range []struct {
		next Shape
		want string
	}{
		{shape("id:int4", "status:text", "amount:numeric", "n:int4", "extra:text"), ""},
		{shape("id:int4", "status:varchar", "amount:float8", "n:int8"), ""},
		{shape("id:int4", "amount:numeric", "n:int4"), "required column status was dropped"},
		{shape("id:int4", "status:text", "amount:text", "n:int4"), "column amount changed type from numeric to text"},
		{shape("id:int4", "status:text", "amount:numeric", "n:numeric"), "column n changed type from int4 to numeric"},
		{shape("id:int4", "status:mood", "amount:numeric", "n:int4"), ""}, // a type of no fixed form may be a string
	} {
		policy, reasons := k.CheckShape(old, tc.next)
		got := strings.Join(reasons, "; ")
		if tc.want == "" && len(reasons) > 0 || tc.want != "" && (policy != DLQ || !strings.Contains(got, tc.want)) {
			t.Errorf("%v: %q %q; want %q", tc.next.Columns, policy, got, tc.want)
		}
	}
	if _, err := NewContracts(map[string]Contract{"orders": {Policy: "explode", Columns: map[string]ColumnPolicy{"a": {Type: "date"}}}}); err == nil ||
		!strings.Contains(err.Error(), "schema.table") || !strings.Contains(err.Error(), "warn, dlq or halt") || !strings.Contains(err.Error(), "integer, number") {
		t.Errorf("bad contracts: %v", err)
	}
}
