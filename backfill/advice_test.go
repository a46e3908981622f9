package backfill

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
)

// adviceSource advises fix for every table, or fails with err.
type adviceSource struct {
	tableSource
	fix string
	err error
}

func (s adviceSource) ChunkAdvice(context.Context, string) (string, string, error) {
	if s.err != nil {
		return "", "", s.err
	}
	if s.fix == "" {
		return "", "", nil
	}
	return "key column id has collation \"en-x-icu\"", s.fix, nil
}

// records keeps the log records of one level and up.
type records struct {
	level slog.Level
	mu    sync.Mutex
	got   []slog.Record
}

func (r *records) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r } // the manager's component attribute
func (r *records) WithGroup(string) slog.Handler      { return r }

// warnings returns the attributes of each warning logged so far.
func (r *records) warnings() []map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]string
	for _, rec := range r.got {
		if rec.Level != slog.LevelWarn {
			continue
		}
		attrs := map[string]string{"msg": rec.Message}
		rec.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		out = append(out, attrs)
	}
	return out
}

// A job whose chunks no index orders is warned about once: when it is
// queued, and again when a restart resumes it; never for a request that
// gets a running job back, nor when the source has nothing to advise or
// cannot tell.
func TestChunkAdviceOncePerJob(t *testing.T) {
	ctx := context.Background()
	const fix = `CREATE INDEX CONCURRENTLY "items_sluice_c" ON "public"."items" ("id" COLLATE "C")`
	st := &memStore{}
	logs := &records{level: slog.LevelWarn}
	m := New(Config{Source: "pg1", Log: slog.New(logs)}, adviceSource{fix: fix}, st)
	jobs, err := m.Start(ctx, []string{"public.items"}, nil, ReasonRequest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Start(ctx, []string{"public.items"}, nil, ReasonRequest); err != nil {
		t.Fatal(err)
	}
	w := logs.warnings()
	if len(w) != 1 {
		t.Fatalf("%d warnings for one job, want 1: %v", len(w), w)
	}
	if w[0]["fix"] != fix || w[0]["table"] != "public.items" || w[0]["job"] != jobs[0].ID || w[0]["why"] == "" {
		t.Errorf("warning %v, want table public.items, job %s and fix %s", w[0], jobs[0].ID, fix)
	}

	// A restart resumes the job: one warning again.
	logs = &records{level: slog.LevelWarn}
	if err := New(Config{Source: "pg1", Log: slog.New(logs)}, adviceSource{fix: fix}, st).Load(ctx); err != nil {
		t.Fatal(err)
	}
	if w := logs.warnings(); len(w) != 1 || w[0]["fix"] != fix || w[0]["job"] != jobs[0].ID {
		t.Errorf("resumed job: warnings %v, want one with fix %s", w, fix)
	}

	for name, src := range map[string]adviceSource{"nothing to advise": {}, "cannot tell": {err: errors.New("connection refused")}} {
		logs := &records{level: slog.LevelWarn}
		m := New(Config{Source: "pg1", Log: slog.New(logs)}, src, &memStore{})
		if _, err := m.Start(ctx, []string{"public.items"}, nil, ReasonRequest); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if w := logs.warnings(); len(w) != 0 {
			t.Errorf("%s: warnings %v, want none", name, w)
		}
	}
}
