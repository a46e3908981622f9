package schemas

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sources"
)

// Column is one column of a registered shape.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"` // the database's type name
	Key  bool   `json:"key,omitempty"`
	// NotNull: declared NOT NULL (false also when the source cannot tell).
	NotNull bool `json:"not_null,omitempty"`
	// Kind is the values' logical kind, which the JSON Schema follows.
	// Shapes registered before kinds existed have none.
	Kind sources.Kind `json:"kind,omitempty"`
}

// Shape is a table shape as consumers see it (after privacy policies),
// with the version the registry gave it.
type Shape struct {
	Source     string    `json:"source"`
	Schema     string    `json:"schema"`
	Table      string    `json:"table"`
	Version    int       `json:"version"`
	Columns    []Column  `json:"columns"`
	Key        []string  `json:"key"`
	Registered time.Time `json:"registered"`
}

// ShapeOf describes a table shape.
func ShapeOf(source string, t *sources.Table) Shape {
	s := Shape{Source: source, Schema: t.Schema, Table: t.Name}
	for i, c := range t.Columns {
		s.Columns = append(s.Columns, Column{Name: c, Type: t.Types[i], Key: slices.Contains(t.Key, i),
			NotNull: i < len(t.NotNull) && t.NotNull[i], Kind: t.ColumnKind(i)})
	}
	for _, k := range t.Key {
		s.Key = append(s.Key, t.Columns[k])
	}
	return s
}

func (s Shape) same(o Shape) bool {
	return slices.EqualFunc(s.Columns, o.Columns, Column.same) && slices.Equal(s.Key, o.Key)
}

// same leaves Kind out: the driver derives it from Type, so it tells no
// shapes apart, and the shapes registered before kinds existed have none,
// which would give every unchanged table a new version on the first start
// after an upgrade.
func (c Column) same(o Column) bool {
	return c.Name == o.Name && c.Type == o.Type && c.Key == o.Key && c.NotNull == o.NotNull
}

// Store keeps the registered shapes: the checkpoint bucket.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte) error
	Keys(ctx context.Context, prefix string) ([]string, error)
}

// ShapePrefix is where a table's shapes are kept in the store; the
// version follows.
func ShapePrefix(source, qualified string) string {
	return "schema." + source + "." + checkpoint.KeyToken(qualified) + "."
}

// Change is a new shape of a table that had another before.
type Change struct {
	Old, New Shape
}

// Registry gives every table shape a version that lasts across restarts:
// a shape seen before keeps its version, a new one gets the next.
type Registry struct {
	source string
	store  Store

	mu       sync.Mutex
	versions map[string][]Shape // schema.table → its shapes, by version
	out      map[*sources.Table]*sources.Table
	// known, once set, holds the tables captured at start: the first shape
	// of any other table is announced (AnnounceFirstShapes).
	known map[string]bool
}

// NewRegistry returns the registry of one source's shapes.
func NewRegistry(source string, store Store) *Registry {
	return &Registry{source: source, store: store, versions: make(map[string][]Shape), out: make(map[*sources.Table]*sources.Table)}
}

// AnnounceFirstShapes makes the first shape of a table outside known (the
// tables captured at start) a schema-change event from an empty shape: a
// table that joins while sluice runs is new to consumers, who learn its
// columns and key before its first row. The tables of known keep the
// silent first shape they always had.
func (r *Registry) AnnounceFirstShapes(known []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.known = make(map[string]bool, len(known))
	for _, t := range known {
		r.known[t] = true
	}
}

// Observe returns the table to publish t's changes with, its Version the
// registered one. When t is a shape never seen of a table that had others,
// it also returns the change, which the caller publishes and then
// registers (Register) before any change of the new shape: a crash in
// between finds the shape new again and publishes the same event.
func (r *Registry) Observe(ctx context.Context, t *sources.Table) (*sources.Table, *Change, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if out, ok := r.out[t]; ok {
		return out, nil, nil
	}
	qn := t.QualifiedName()
	shapes, err := r.load(ctx, qn)
	if err != nil {
		return nil, nil, err
	}
	shape := ShapeOf(r.source, t)
	for _, s := range shapes {
		if s.same(shape) {
			return r.versioned(t, s.Version), nil, nil
		}
	}
	shape.Version = len(shapes) + 1
	shape.Registered = time.Now().UTC()
	if len(shapes) == 0 && r.known != nil && !r.known[qn] {
		empty := Shape{Source: r.source, Schema: t.Schema, Table: t.Name, Columns: []Column{}, Key: []string{}}
		return r.versionedCopy(t, shape.Version), &Change{Old: empty, New: shape}, nil
	}
	if len(shapes) == 0 {
		// A table's first shape changes nothing for consumers.
		if err := r.put(ctx, shape); err != nil {
			return nil, nil, err
		}
		return r.versioned(t, shape.Version), nil, nil
	}
	return r.versionedCopy(t, shape.Version), &Change{Old: shapes[len(shapes)-1], New: shape}, nil
}

// Register records a new shape whose change event is stored.
func (r *Registry) Register(ctx context.Context, ch *Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.put(ctx, ch.New)
}

func (r *Registry) versioned(t *sources.Table, v int) *sources.Table {
	out := r.versionedCopy(t, v)
	r.out[t] = out
	return out
}

func (r *Registry) versionedCopy(t *sources.Table, v int) *sources.Table {
	if t.Version == v {
		return t
	}
	out := *t
	out.Version = v
	return &out
}

func (r *Registry) put(ctx context.Context, s Shape) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	qn := s.Schema + "." + s.Table
	if err := r.store.Put(ctx, ShapePrefix(r.source, qn)+strconv.Itoa(s.Version), b); err != nil {
		return fmt.Errorf("register version %d of %s: %w", s.Version, qn, err)
	}
	r.versions[qn] = append(r.versions[qn], s)
	return nil
}

// load reads a table's shapes from the store once.
func (r *Registry) load(ctx context.Context, qn string) ([]Shape, error) {
	if s, ok := r.versions[qn]; ok {
		return s, nil
	}
	shapes, err := LoadShapes(ctx, r.store, r.source, qn)
	if err != nil {
		return nil, err
	}
	r.versions[qn] = shapes
	return shapes, nil
}

// LoadShapes reads every registered shape of a table, by version.
func LoadShapes(ctx context.Context, st Store, source, qualified string) ([]Shape, error) {
	prefix := ShapePrefix(source, qualified)
	keys, err := st.Keys(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var shapes []Shape
	for _, k := range keys {
		b, ok, err := st.Get(ctx, k)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		var s Shape
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("shape %s in the checkpoint bucket is corrupt: %w", k, err)
		}
		shapes = append(shapes, s)
	}
	sort.Slice(shapes, func(a, b int) bool { return shapes[a].Version < shapes[b].Version })
	for i, s := range shapes {
		if s.Version != i+1 {
			return nil, fmt.Errorf("shapes of %s in the checkpoint bucket skip from version %d to %d", qualified, i, s.Version)
		}
	}
	return shapes, nil
}

// EventBody is the "schema" member of a schema-change event: the old and
// new shape and the JSON Schema of the new one's rows.
func (ch *Change) EventBody() ([]byte, error) {
	return json.Marshal(struct {
		Old        Shape          `json:"old"`
		New        Shape          `json:"new"`
		JSONSchema map[string]any `json:"json_schema"`
	}{ch.Old, ch.New, ch.New.JSONSchema()})
}
