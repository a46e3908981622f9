package schemas

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

// memStore is a map with the checkpoint store's methods: the registry's
// logic, apart from the bucket (tested against JetStream in cmd/sluice).
type memStore map[string][]byte

func (m memStore) Get(_ context.Context, k string) ([]byte, bool, error) {
	v, ok := m[k]
	return v, ok, nil
}

func (m memStore) Put(_ context.Context, k string, v []byte) error { m[k] = v; return nil }

func (m memStore) Keys(_ context.Context, prefix string) ([]string, error) {
	var keys []string
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func table(cols ...string) *sources.Table {
	t := &sources.Table{Schema: "public", Name: "items", Columns: cols, Key: []int{0}, Version: 1}
	for range cols {
		t.Types = append(t.Types, "int4")
	}
	return t
}

func TestRegistryVersions(t *testing.T) {
	ctx := context.Background()
	st := memStore{}
	r := NewRegistry("pg1", st)
	v1, ch, err := r.Observe(ctx, table("id", "v"))
	if err != nil || ch != nil || v1.Version != 1 {
		t.Fatalf("first shape: v%d, change %v, %v", v1.Version, ch, err)
	}
	v2, ch, err := r.Observe(ctx, table("id", "v", "note"))
	if err != nil || ch == nil || v2.Version != 2 || ch.Old.Version != 1 || ch.New.Version != 2 {
		t.Fatalf("new shape: v%d, change %+v, %v", v2.Version, ch, err)
	}
	if _, ok := st[ShapePrefix("pg1", "public.items")+"2"]; ok {
		t.Fatal("a new shape must be registered only after its event is stored")
	}
	// Not registered yet (a crash before Register): announced again.
	if _, again, _ := r.Observe(ctx, table("id", "v", "note")); again == nil || again.New.Version != 2 {
		t.Fatalf("an unregistered shape was not announced again: %+v", again)
	}
	if err := r.Register(ctx, ch); err != nil {
		t.Fatal(err)
	}
	// A restart: a new registry over the same store knows both versions,
	// and a shape seen before keeps its version without an announcement.
	r = NewRegistry("pg1", st)
	for cols, want := range map[string]int{"id,v": 1, "id,v,note": 2} {
		got, ch, err := r.Observe(ctx, table(strings.Split(cols, ",")...))
		if err != nil || ch != nil || got.Version != want {
			t.Errorf("%s after restart: v%d, change %v, %v; want v%d", cols, got.Version, ch, err, want)
		}
	}
	body, err := (&Change{Old: ShapeOf("pg1", table("id")), New: ShapeOf("pg1", table("id", "v"))}).EventBody()
	if err != nil || !json.Valid(body) || !strings.Contains(string(body), `"json_schema"`) {
		t.Fatalf("event body %s, %v", body, err)
	}
}

func TestJSONSchemaTypes(t *testing.T) {
	s := Shape{Schema: "public", Table: "t", Version: 4, Key: []string{"id"}, Columns: []Column{
		{Name: "id", Type: "int8", Key: true, NotNull: true}, {Name: "amount", Type: "numeric"}, {Name: "at", Type: "timestamptz"},
		{Name: "doc", Type: "jsonb"}, {Name: "tags", Type: "_text"}, {Name: "raw", Type: "bytea"},
		{Name: "d", Type: "decimal(10,2)"}, {Name: "n", Type: "bigint unsigned"}, {Name: "mood", Type: "mood"},
	}}
	js := s.JSONSchema()
	props := js["properties"].(map[string]any)
	typeOf := func(col string) string {
		b, _ := json.Marshal(props[col])
		return string(b)
	}
	for col, want := range map[string]string{
		"id":     `"type":["integer"]`,
		"amount": `"pattern"`,
		"at":     `"format":"date-time"`,
		"tags":   `"type":["array","null"]`,
		"raw":    `"contentEncoding":"base64"`,
		"d":      `"pattern"`,
		"n":      `"type":["integer","null"]`,
	} {
		if !strings.Contains(typeOf(col), want) {
			t.Errorf("%s: %s, want %s", col, typeOf(col), want)
		}
	}
	if got := typeOf("doc"); strings.Contains(got, `"type"`) {
		t.Errorf("jsonb admits any value, got %s", got)
	}
	if got := typeOf("mood"); strings.Contains(got, `"type"`) {
		t.Errorf("an unknown type admits any value, got %s", got)
	}
	if js["title"] != "public.t version 4" || len(js["required"].([]string)) != 1 {
		t.Errorf("schema %v", js)
	}
}

// A table that joins while sluice runs announces its first shape; the
// tables captured at start keep theirs silent.
func TestAnnounceFirstShapes(t *testing.T) {
	ctx := context.Background()
	r := NewRegistry("pg1", memStore{})
	r.AnnounceFirstShapes([]string{"public.items"})
	if _, ch, err := r.Observe(ctx, table("id", "v")); err != nil || ch != nil {
		t.Fatalf("a table captured at start: change %+v, %v", ch, err)
	}
	fresh := table("id", "name")
	fresh.Name = "fresh"
	out, ch, err := r.Observe(ctx, fresh)
	if err != nil || ch == nil {
		t.Fatalf("a table that joined: change %+v, %v", ch, err)
	}
	if out.Version != 1 || ch.Old.Version != 0 || len(ch.Old.Columns) != 0 || ch.New.Table != "fresh" || len(ch.New.Columns) != 2 {
		t.Errorf("announced %+v at version %d", ch, out.Version)
	}
	if err := r.Register(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, ch, err := r.Observe(ctx, fresh); err != nil || ch != nil {
		t.Errorf("the registered shape is announced again: %+v, %v", ch, err)
	}
}
