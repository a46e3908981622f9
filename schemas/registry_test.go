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
		t.Kinds = append(t.Kinds, sources.KindInteger)
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
	col := func(name, typ string, kind sources.Kind) Column { return Column{Name: name, Type: typ, Kind: kind} }
	s := Shape{Schema: "public", Table: "t", Version: 4, Key: []string{"id"}, Columns: []Column{
		{Name: "id", Type: "int8", Key: true, NotNull: true, Kind: sources.KindInteger}, col("amount", "numeric", sources.KindDecimal),
		col("at", "timestamptz", sources.KindTimestamp), col("doc", "jsonb", sources.KindJSON), col("tags", "_text", sources.KindArray),
		col("raw", "bytea", sources.KindBytes), col("f", "float8", sources.KindFloat), col("ok", "bool", sources.KindBool),
		col("day", "date", sources.KindDate), col("u", "uuid", sources.KindUUID), col("tm", "time", sources.KindTime),
		col("ip", "inet", sources.KindString), col("mood", "mood", sources.KindOther), col("old", "int4", ""),
	}}
	js := s.JSONSchema()
	props := js["properties"].(map[string]any)
	typeOf := func(col string) string {
		b, _ := json.Marshal(props[col])
		return string(b)
	}
	for col, want := range map[string]string{
		"id":     `{"type":["integer"],"x-sluice-type":"int8"}`,
		"amount": `{"pattern":"^(-?[0-9]+(\\.[0-9]+)?|NaN|-?Infinity)$","type":["string","null"],"x-sluice-type":"numeric"}`,
		"at":     `{"format":"date-time","type":["string","null"],"x-sluice-type":"timestamptz"}`,
		"doc":    `{"x-sluice-type":"jsonb"}`,
		"tags":   `{"type":["array","null"],"x-sluice-type":"_text"}`,
		"raw":    `{"contentEncoding":"base64","type":["string","null"],"x-sluice-type":"bytea"}`,
		"f":      `{"type":["number","string","null"],"x-sluice-type":"float8"}`,
		"ok":     `{"type":["boolean","null"],"x-sluice-type":"bool"}`,
		"day":    `{"format":"date","type":["string","null"],"x-sluice-type":"date"}`,
		"u":      `{"format":"uuid","type":["string","null"],"x-sluice-type":"uuid"}`,
		"tm":     `{"type":["string","null"],"x-sluice-type":"time"}`,
		"ip":     `{"type":["string","null"],"x-sluice-type":"inet"}`,
		"mood":   `{"x-sluice-type":"mood"}`, // no fixed form: any value
		"old":    `{"x-sluice-type":"int4"}`, // kind unknown: any value
	} {
		if got := typeOf(col); got != want {
			t.Errorf("%s: %s, want %s", col, got, want)
		}
	}
	if js["title"] != "public.t version 4" || len(js["required"].([]string)) != 1 {
		t.Errorf("schema %v", js)
	}
}

// Shapes registered before kinds existed have none: an unchanged table
// keeps its version across the upgrade, announces nothing and rewrites
// nothing; a new shape is stored with its kinds.
func TestRegistryShapesWithoutKinds(t *testing.T) {
	ctx := context.Background()
	st := memStore{}
	legacy := `{"source":"pg1","schema":"public","table":"items","version":1,` +
		`"columns":[{"name":"id","type":"int4","key":true,"not_null":true},{"name":"v","type":"int4"}],"key":["id"],"registered":"2025-01-02T03:04:05Z"}`
	st[ShapePrefix("pg1", "public.items")+"1"] = []byte(legacy)
	items := table("id", "v")
	items.NotNull = []bool{true, false}
	got, ch, err := NewRegistry("pg1", st).Observe(ctx, items)
	if err != nil || ch != nil || got.Version != 1 {
		t.Fatalf("unchanged table after the upgrade: v%d, change %+v, %v; want v1 and no change", got.Version, ch, err)
	}
	if string(st[ShapePrefix("pg1", "public.items")+"1"]) != legacy || len(st) != 1 {
		t.Errorf("the registered shape was rewritten: %q", st)
	}
	wider := table("id", "v", "note")
	wider.NotNull = []bool{true, false, false}
	r := NewRegistry("pg1", st)
	_, ch, err = r.Observe(ctx, wider)
	if err != nil || ch == nil || ch.New.Version != 2 {
		t.Fatalf("new shape: change %+v, %v", ch, err)
	}
	if err := r.Register(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if b := st[ShapePrefix("pg1", "public.items")+"2"]; strings.Count(string(b), `"kind":"integer"`) != 3 {
		t.Errorf("version 2 stored as %s, want each column's kind", b)
	}
}

// A shape registered before kinds existed gets them from the driver for
// its JSON Schema; kinds it has stay, and the registered shape is not
// changed.
func TestShapeWithKinds(t *testing.T) {
	legacy := Shape{Schema: "public", Table: "t", Columns: []Column{{Name: "id", Type: "int4"}, {Name: "v", Type: "text", Kind: sources.KindOther}}}
	kindOf := func(typeName string) sources.Kind {
		if typeName == "int4" {
			return sources.KindInteger
		}
		return sources.KindString
	}
	got := legacy.WithKinds(kindOf)
	if got.Columns[0].Kind != sources.KindInteger || got.Columns[1].Kind != sources.KindOther {
		t.Errorf("kinds %+v, want integer and the stored other", got.Columns)
	}
	if legacy.Columns[0].Kind != "" {
		t.Error("WithKinds changed the registered shape")
	}
	b, _ := json.Marshal(got.JSONSchema()["properties"].(map[string]any)["id"])
	if !strings.Contains(string(b), `"integer"`) {
		t.Errorf("id's JSON Schema %s", b)
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

// With no table known (as sluice run calls it), every table's first shape
// is announced, from an empty shape whose columns and key are JSON empty
// lists; a first shape a sluice before the announcement registered stays
// silent after the upgrade.
func TestAnnounceEveryFirstShape(t *testing.T) {
	ctx := context.Background()
	store := memStore{}
	old := NewRegistry("pg1", store)
	legacy := table("id", "v")
	legacy.Name = "legacy"
	if _, ch, err := old.Observe(ctx, legacy); err != nil || ch != nil {
		t.Fatalf("without announcements: change %+v, %v", ch, err)
	}

	r := NewRegistry("pg1", store)
	r.AnnounceFirstShapes(nil)
	out, ch, err := r.Observe(ctx, table("id", "v"))
	if err != nil || ch == nil {
		t.Fatalf("a table captured at start: change %+v, %v", ch, err)
	}
	if out.Version != 1 || ch.Old.Version != 0 || ch.New.Version != 1 || len(ch.New.Columns) != 2 {
		t.Errorf("announced %+v at version %d", ch, out.Version)
	}
	body, err := ch.EventBody()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), `"version":0,"columns":[],"key":[]`) {
		t.Errorf("the empty shape is not empty lists: %s", body)
	}
	if _, ch, err := r.Observe(ctx, legacy); err != nil || ch != nil {
		t.Errorf("a shape registered before announcements is announced: %+v, %v", ch, err)
	}
}
