package sources

import (
	"slices"
	"testing"
)

func TestTableSet(t *testing.T) {
	set, err := NewTableSet([]string{"public.orders", "shop.order_*", "app.*", "public.secret_plans"}, []string{"app.secret_*", "public.secret_plans", "shop.order_[0-9]*"})
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Listed(); !slices.Equal(got, []string{"public.orders"}) {
		t.Errorf("Listed() = %v: an excluded name is not listed", got)
	}
	for qn, want := range map[string]bool{
		"shop.order_items":   true,
		"shop.orders":        false, // order_* needs the underscore
		"shop.order_2024":    false, // excluded
		"app.users":          true,
		"app.secret_keys":    false,
		"appx.users":         false, // * never crosses the dot
		"application.users":  false,
		"public.orders":      false, // listed, not matched: it must have a key
		"public.secret_plan": false,
	} {
		if got := set.Matches(qn); got != want {
			t.Errorf("Matches(%q) = %v, want %v", qn, got, want)
		}
	}
	if !set.HasPatterns() || set.Everything() {
		t.Errorf("HasPatterns %v, Everything %v", set.HasPatterns(), set.Everything())
	}
	all, err := NewTableSet(nil, []string{"public.audit_*"})
	if err != nil || !all.Everything() || !all.Excluded("public.audit_log") || all.Excluded("public.orders") {
		t.Errorf("an empty source.tables with exclude: %+v, %v", all, err)
	}
	if _, err := NewTableSet([]string{"a.b[", "nodot"}, []string{"x.[z"}); err == nil {
		t.Error("bad entries accepted")
	}
}
