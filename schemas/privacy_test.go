package schemas

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

var users = &sources.Table{
	Schema: "public", Name: "users", Version: 3,
	Columns: []string{"id", "email", "ssn", "notes", "age"},
	Types:   []string{"int4", "text", "text", "text", "int4"},
	Kinds:   []sources.Kind{sources.KindInteger, sources.KindString, sources.KindString, sources.KindString, sources.KindInteger},
	Key:     []int{0},
}

func vals(s ...string) []sources.Value {
	out := make([]sources.Value, len(s))
	for i, v := range s {
		if v != "<nil>" {
			out[i] = sources.Value(v)
		}
	}
	return out
}

const key = "0123456789abcdef0123456789abcdef"

func hashOf(v string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(v))
	return `"` + hex.EncodeToString(m.Sum(nil)) + `"`
}

func TestPrivacyRewritesEveryImage(t *testing.T) {
	p, err := NewPrivacy(map[string]string{"public.users.email": "hash", "public.users.ssn": "mask", "public.users.notes": "drop"}, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	c := &sources.Change{Op: sources.OpUpdate, Table: users,
		Before: vals(`7`, `"a@x.io"`, `"123-45-6789"`, `"secret"`, `40`),
		After:  vals(`7`, `"b@x.io"`, `null`, `<nil>`, `41`)}
	got, err := p.Change(c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.Table.Columns, ",") != "id,email,ssn,age" || got.Table.Version != 3 || got.Table.Key[0] != 0 {
		t.Fatalf("shape %+v", got.Table)
	}
	want := map[string][]string{
		"before": {`7`, hashOf(`"a@x.io"`), MaskedValue, `40`},
		"after":  {`7`, hashOf(`"b@x.io"`), `null`, `41`},
	}
	for name, row := range map[string][]sources.Value{"before": got.Before, "after": got.After} {
		for i, w := range want[name] {
			if string(row[i]) != w {
				t.Errorf("%s[%s] = %s, want %s", name, got.Table.Columns[i], row[i], w)
			}
		}
	}
	if c.Table != users || string(c.After[1]) != `"b@x.io"` {
		t.Fatal("the input change was modified")
	}
	// The same shape is rewritten with the same output table.
	again, _ := p.Change(c)
	if again.Table != got.Table {
		t.Error("a second change of the shape got a new table")
	}
	if !p.KeyOrderKept(users) {
		t.Error("no key column is hashed, yet key order is reported lost")
	}
}

func TestPrivacyHashedKey(t *testing.T) {
	p, err := NewPrivacy(map[string]string{"public.users.id": "hash"}, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Change(&sources.Change{Op: sources.OpCreate, Table: users, After: vals(`7`, `"x"`, `null`, `null`, `1`)})
	b, _ := p.Change(&sources.Change{Op: sources.OpDelete, Table: users, Before: vals(`7`, `<nil>`, `<nil>`, `<nil>`, `<nil>`)})
	if string(a.KeyValues()[0]) != hashOf("7") || string(b.KeyValues()[0]) != hashOf("7") {
		t.Fatalf("hashed keys %s, %s: the same key must hash alike in every image", a.KeyValues()[0], b.KeyValues()[0])
	}
	if p.KeyOrderKept(users) {
		t.Error("a hashed key keeps no order, chunk events must be off")
	}
	// The hashed integer key is text now, in name and in kind (its JSON
	// Schema says string); the other columns keep theirs.
	if tt := a.Table; tt.Types[0] != "text" || tt.ColumnKind(0) != sources.KindString ||
		tt.Types[4] != "int4" || tt.ColumnKind(4) != sources.KindInteger {
		t.Errorf("hashed key column: types %q, kinds %q", tt.Types, tt.Kinds)
	}
	other := &sources.Table{Schema: "public", Name: "orders", Columns: []string{"id"}, Types: []string{"int4"}, Key: []int{0}}
	c := &sources.Change{Op: sources.OpCreate, Table: other, After: vals(`1`)}
	if got, _ := p.Change(c); got != c || !p.KeyOrderKept(other) {
		t.Error("a table without policies must pass as is")
	}
}

func TestPrivacyErrors(t *testing.T) {
	for _, tc := range []struct {
		cols    map[string]string
		key     string
		mention []string
	}{
		{map[string]string{"users.email": "hash"}, key, []string{"users.email", "schema.table.column"}},
		{map[string]string{"public.users.email": "encrypt"}, key, []string{"encrypt", "mask, hash or drop"}},
		{map[string]string{"public.users.email": "hash"}, "short", []string{"hash_key_env", "16 bytes"}},
	} {
		_, err := NewPrivacy(tc.cols, []byte(tc.key))
		if !errors.Is(err, ErrPolicy) {
			t.Fatalf("%v: err = %v", tc.cols, err)
		}
		for _, m := range tc.mention {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("error %q does not mention %q", err, m)
			}
		}
	}
	p, err := NewPrivacy(map[string]string{"public.users.id": "drop"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Change(&sources.Change{Op: sources.OpCreate, Table: users, After: vals(`1`, `""`, `""`, `""`, `1`)})
	if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), "key column") || !strings.Contains(err.Error(), "hash it instead") {
		t.Fatalf("dropping a key column: %v", err)
	}
}

// A policy that matches no captured table or column stops sluice, naming
// the near miss: it would hide nothing.
func TestPrivacyCoverage(t *testing.T) {
	p, err := NewPrivacy(map[string]string{
		"public.users.SSN": "mask", "public.users.email": "drop", "public.Users.note": "mask", "public.gone.x": "mask",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cols := func(_ context.Context, table string) ([]string, error) {
		return map[string][]string{"public.users": {"id", "email", "ssn"}}[table], nil
	}
	err = p.CheckCoverage(context.Background(), []string{"public.users", "public.orders"}, cols, nil)
	for _, want := range []string{"public.users.SSN matches no column", "did you mean ssn?", "table public.Users, which is not captured (did you mean public.users?",
		"table public.gone, which is not captured (captured: public.orders, public.users)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("coverage error %v does not mention %q", err, want)
		}
	}
	if !errors.Is(err, ErrPolicy) {
		t.Errorf("not ErrPolicy: %v", err)
	}
	ok, _ := NewPrivacy(map[string]string{"public.users.ssn": "mask", "public.users.email": "drop"}, nil)
	if err := ok.CheckCoverage(context.Background(), []string{"public.users"}, cols, nil); err != nil {
		t.Errorf("exact policies refused: %v", err)
	}
	// A policy may name a column of an earlier shape (a column since
	// renamed), for the events of that shape still to be read.
	was := mustPrivacy(t, map[string]string{"public.users.ssn": "mask", "public.users.social": "mask"})
	cols2 := func(_ context.Context, table string) ([]string, error) { return []string{"id", "social"}, nil }
	former := func(_ context.Context, table string) ([]string, error) { return []string{"id", "ssn"}, nil }
	if err := was.CheckCoverage(context.Background(), []string{"public.users"}, cols2, former); err != nil {
		t.Errorf("a policy on a former column refused: %v", err)
	}
	if err := was.CheckCoverage(context.Background(), []string{"public.users"}, cols2, nil); err == nil || !strings.Contains(err.Error(), "public.users.ssn matches no column") {
		t.Errorf("without the earlier shapes, a policy on ssn: %v", err)
	}
}

func mustPrivacy(t *testing.T, cols map[string]string) *Privacy {
	t.Helper()
	p, err := NewPrivacy(cols, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A shape that lost a policy's column and gained a column no policy names
// (a rename) halts before any change of it is rewritten; a drop alone,
// or warn, goes on.
func TestPrivacyMissingColumn(t *testing.T) {
	ctx := context.Background()
	shape := func(cols ...string) *sources.Table {
		types := make([]string, len(cols))
		for i := range types {
			types[i] = "text"
		}
		return &sources.Table{Schema: "public", Name: "users", Columns: cols, Types: types, Key: []int{0}}
	}
	row := func(t *sources.Table) *sources.Change {
		v := make([]string, len(t.Columns))
		for i := range v {
			v[i] = `"666-66-6666"`
		}
		return &sources.Change{Op: sources.OpCreate, Table: t, After: vals(v...)}
	}
	catalog := func(cols ...string) ColumnsFunc {
		return func(context.Context, string) ([]string, error) { return cols, nil }
	}
	p := mustPrivacy(t, map[string]string{"public.users.ssn": "mask"})
	if err := p.CheckCoverage(ctx, []string{"public.users"}, catalog("id", "ssn", "age"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Change(row(shape("id", "ssn", "age"))); err != nil {
		t.Fatal(err)
	}
	// A column added with no policy is not a rename.
	if _, err := p.Change(row(shape("id", "ssn", "age", "city"))); err != nil {
		t.Fatalf("a column added: %v", err)
	}
	out, err := p.Change(row(shape("id", "social", "age", "city")))
	if out != nil || !errors.Is(err, ErrPolicy) {
		t.Fatalf("rename ssn → social: got %v, %v", out, err)
	}
	for _, want := range []string{"privacy.columns.public.users.ssn", "no longer has", ": social (its columns are now id, social, age, city)", "privacy.on_missing_column is halt"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("rename error %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "666-66-6666") {
		t.Errorf("the error carries a value: %v", err)
	}
	// Dropped: nothing can leak, so it goes on.
	if _, err := p.Change(row(shape("id", "age", "city"))); err != nil {
		t.Fatalf("ssn dropped: %v", err)
	}

	// Restarted after the rename with policies on both names: events of
	// the old shape still in the log are masked, the new shape too.
	both := mustPrivacy(t, map[string]string{"public.users.ssn": "mask", "public.users.social": "mask"})
	if err := both.CheckCoverage(ctx, []string{"public.users"}, catalog("id", "social", "age"), catalog("id", "ssn", "age")); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []*sources.Table{shape("id", "ssn", "age"), shape("id", "social", "age")} {
		out, err := both.Change(row(tb))
		if err != nil {
			t.Fatalf("%v: %v", tb.Columns, err)
		}
		if string(out.After[1]) != MaskedValue {
			t.Fatalf("%v: column %s not masked: %s", tb.Columns, tb.Columns[1], out.After[1])
		}
	}
	// Restarted with only the new name while the old shape is replayed:
	// ssn is a column no policy names and the catalog no longer has.
	renamedOnly := mustPrivacy(t, map[string]string{"public.users.social": "mask"})
	if err := renamedOnly.CheckCoverage(ctx, []string{"public.users"}, catalog("id", "social", "age"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := renamedOnly.Change(row(shape("id", "ssn", "age"))); !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), ": ssn (") {
		t.Fatalf("old shape replayed with the policy on the new name only: %v", err)
	}

	// warn publishes the renamed column as it is.
	w := mustPrivacy(t, map[string]string{"public.users.ssn": "mask"})
	if err := w.MissingColumn(Warn, nil); err != nil {
		t.Fatal(err)
	}
	if out, err := w.Change(row(shape("id", "social"))); err != nil || string(out.After[1]) != `"666-66-6666"` {
		t.Fatalf("warn: %v, %v", out, err)
	}
	if err := w.MissingColumn("ignore", nil); err == nil || !strings.Contains(err.Error(), "privacy.on_missing_column") {
		t.Fatalf("an unknown on_missing_column: %v", err)
	}
}
