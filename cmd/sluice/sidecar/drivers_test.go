package sidecar

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/drivers"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// A source kind registered in the registry alone is read from the config
// file, checked and opened by the same path as postgres and mysql, and
// keeps the contract every driver keeps.
func TestRegisteredDriver(t *testing.T) {
	db := &toyDB{}
	reg := drivers.All()
	reg["toy"] = toyDriver{db: db}
	parse := func(source string) (Config, error) {
		return parseConfig("toy.yaml", []byte("source: "+source+"\n"), reg)
	}

	cfg, err := parse("{name: toy1, kind: toy, tables: [mem.items], rows: 3}")
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := cfg.Source.Settings.(*toySettings); !ok || s.Rows != 3 {
		t.Fatalf("source.rows read as %#v", cfg.Source.Settings)
	}
	if cfg, err := parse("{name: toy1, kind: toy}"); err != nil || cfg.Source.Settings.(*toySettings).Rows != 0 {
		t.Fatalf("defaults: %v %#v", err, cfg.Source.Settings)
	}
	for _, c := range []struct{ source, want string }{
		{"{name: toy1, kind: toy, slot: s}", "line 1: unknown key source.slot: a key of kind postgres, and source.kind is toy"},
		{"{name: toy1, kind: postgres, dsn: x, rows: 2}", "line 1: unknown key source.rows: a key of kind toy, and source.kind is postgres"},
		{"{name: toy1, kind: toy, rowz: 2}", "unknown key source.rowz"},
		{"{name: toy 1, kind: toy, rows: -1}", "may hold only letters, digits, '_' and '-'\n  source.rows -1 must not be negative"},
		{"{name: toy1, kind: oracle}", `source.kind "oracle" is not supported: use mysql or postgres or toy`},
	} {
		if _, err := parse(c.source); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("source: %s: %v, want %q", c.source, err, c.want)
		}
	}

	if w := SourceTLSWarning(cfg.Source); w != "" {
		t.Errorf("TLS warning %q", w)
	}
	var out strings.Builder
	report := func(what string, problems ...string) {
		fmt.Fprintf(&out, "ok=%t %s %q\n", len(problems) == 0, what, problems)
	}
	checkSource(context.Background(), &out, report, cfg, nil)
	for _, want := range []string{`ok=true toy source toy1 []`, "key of mem.items: primary key (id)", "ok=true rows: 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("sluice check's source lines lack %q:\n%s", want, out.String())
		}
	}

	src, err := openSource(context.Background(), cfg, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := src.EstimateRows(context.Background(), "mem.items"); n != 3 {
		t.Errorf("opened with %d rows, want source.rows 3", n)
	}
	src.Close(context.Background())

	cfg, err = parse("{name: toy1, kind: toy, tables: [mem.items]}")
	if err != nil {
		t.Fatal(err)
	}
	sourcetest.Run(t, sourcetest.Harness{
		Driver: cfg.Source.Driver(),
		Spec:   sourceSpec(cfg, nil, slog.New(slog.DiscardHandler)),
		Table:  "mem.items",
		Insert: func(_ context.Context, id int, v string) error { db.insert(id, v); return nil },
	})
}

// Every registered kind's settings read beside the shared keys: a key
// both declare would make the section unreadable.
func TestDriverSettingsKeys(t *testing.T) {
	for kind, d := range drivers.All() {
		cfg, err := ParseConfig(kind+".yaml", []byte("source: {name: a1, kind: "+kind+", dsn: x}\n"))
		if err != nil && strings.Contains(err.Error(), "unknown key") {
			t.Errorf("%s: %v", kind, err)
		}
		if reflect.TypeOf(cfg.Source.Settings) != reflect.TypeOf(d.NewSettings()) {
			t.Errorf("%s: settings read as %T", kind, cfg.Source.Settings)
		}
	}
}

// toyDriver is a kind of source that lives in memory: table mem.items
// (id, v) and its log.
type toyDriver struct{ db *toyDB }

type toySettings struct {
	Rows int `yaml:"rows"` // rows the table holds when opened
}

func (s *toySettings) Validate(sources.Config) error {
	var p sources.Problems
	if s.Rows < 0 {
		p.Add("source.rows %d must not be negative", s.Rows)
	}
	return p.Err()
}

func (toyDriver) NewSettings() sources.Settings  { return &toySettings{} }
func (toyDriver) DSNHasPassword(string) bool     { return false }
func (toyDriver) TLSWarning(sources.Spec) string { return "" }

func (toyDriver) KindOf(typeName string) sources.Kind {
	switch typeName {
	case "int":
		return sources.KindInteger
	case "text":
		return sources.KindString
	}
	return sources.KindOther
}

func (d toyDriver) Open(_ context.Context, spec sources.Spec) (sources.Source, error) {
	d.db.open(spec.Settings.(*toySettings).Rows)
	return &toySource{db: d.db, name: spec.Name}, nil
}

func (toyDriver) Check(_ context.Context, spec sources.Spec) sources.Preflight {
	return sources.Preflight{
		Catalog: sources.Catalog{Tables: []sources.CapturedTable{{
			Key: sources.KeyInfo{Table: "mem.items", Columns: []string{"id"}, From: "primary key"}, Columns: []string{"id", "v"}}}},
		Passed: []string{"rows: " + strconv.Itoa(spec.Settings.(*toySettings).Rows)},
	}
}

var (
	toyItems = &sources.Table{Schema: "mem", Name: "items", Columns: []string{"id", "v"}, Types: []string{"int", "text"},
		Kinds: []sources.Kind{sources.KindInteger, sources.KindString}, Key: []int{0}, Version: 1}
	toySignal = &sources.Table{Schema: "mem", Name: "sluice_signal", Columns: []string{"source", "kind", "id"}, Types: []string{"text", "text", "text"},
		Kinds: []sources.Kind{sources.KindString, sources.KindString, sources.KindString}, Key: []int{0}, Version: 1}
)

// toyDB is the database: rows by id, and a log of one change per
// transaction, its position the index after it.
type toyDB struct {
	mu   sync.Mutex
	rows map[int]string
	log  []*sources.Change
	wake chan struct{}
}

func (db *toyDB) open(rows int) {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.rows, db.log, db.wake = map[int]string{}, nil, make(chan struct{})
	for i := 1; i <= rows; i++ {
		db.rows[i] = "row"
	}
}

func jsonValue(v any) sources.Value { b, _ := json.Marshal(v); return b }

func (db *toyDB) insert(id int, v string) {
	db.mu.Lock()
	db.rows[id] = v
	db.mu.Unlock()
	db.append(&sources.Change{Op: sources.OpCreate, Table: toyItems, After: []sources.Value{jsonValue(id), jsonValue(v)}})
}

func (db *toyDB) append(c *sources.Change) {
	db.mu.Lock()
	defer db.mu.Unlock()
	c.Pos = sources.Position(strconv.Itoa(len(db.log) + 1))
	db.log = append(db.log, c)
	close(db.wake)
	db.wake = make(chan struct{})
}

// since returns the log after pos, and a channel closed when it grows.
func (db *toyDB) since(pos int) ([]*sources.Change, <-chan struct{}) {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.log[min(pos, len(db.log)):], db.wake
}

type toySource struct {
	db   *toyDB
	name string
}

func (s *toySource) Stream(ctx context.Context, from sources.Position, h sources.Handler) error {
	pos, _ := strconv.Atoi(string(from))
	sources.Opened(h)
	for {
		changes, wake := s.db.since(pos)
		for _, c := range changes {
			if err := h.Change(ctx, c); err != nil {
				return err
			}
			if err := h.Commit(ctx, sources.Commit{Pos: c.Pos}); err != nil {
				return err
			}
			pos++
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

func (s *toySource) Ack(sources.Position)        {}
func (s *toySource) Close(context.Context) error { return nil }
func (s *toySource) Database() string            { return "mem" }
func (s *toySource) RetainedBytes() int64        { return -1 }
func (s *toySource) Start() sources.Position     { return "" }
func (s *toySource) Tables() []string            { return []string{"mem.items"} }

func (s *toySource) Reset(context.Context) (sources.Position, error) {
	changes, _ := s.db.since(0)
	return sources.Position(strconv.Itoa(len(changes))), nil
}

func (s *toySource) Columns(context.Context, string) ([]string, error) { return toyItems.Columns, nil }

func (s *toySource) EstimateRows(context.Context, string) (int64, error) {
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	return int64(len(s.db.rows)), nil
}

func (s *toySource) ReadChunk(_ context.Context, q sources.ChunkQuery) (sources.Chunk, error) {
	from := 0
	if q.From != nil {
		_ = json.Unmarshal(q.From[0], &from)
	}
	s.db.mu.Lock()
	defer s.db.mu.Unlock()
	var ids []int
	for id := range s.db.rows {
		if id >= from {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	chunk := sources.Chunk{Table: toyItems}
	for _, id := range ids[:min(len(ids), q.Limit)] {
		chunk.Rows = append(chunk.Rows, []sources.Value{jsonValue(id), jsonValue(s.db.rows[id])})
	}
	return chunk, nil
}

func (s *toySource) WriteSignal(_ context.Context, kind, id string) error {
	s.db.append(&sources.Change{Op: sources.OpUpdate, Table: toySignal, After: []sources.Value{jsonValue(s.name), jsonValue(kind), jsonValue(id)}})
	return nil
}

func (s *toySource) ReadSignal(c *sources.Change) (sources.Signal, bool) {
	if c.Table != toySignal {
		return sources.Signal{}, false
	}
	return sources.SignalRow(c), true
}
