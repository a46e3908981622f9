package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/capture"
)

// memStore is the checkpoint bucket's key-value contract in memory.
type memStore struct {
	mu sync.Mutex
	kv map[string][]byte
}

func (s *memStore) Get(_ context.Context, key string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.kv[key]
	return b, ok, nil
}

func (s *memStore) Put(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv == nil {
		s.kv = make(map[string][]byte)
	}
	s.kv[key] = append([]byte(nil), value...)
	return nil
}

func (s *memStore) Keys(_ context.Context, prefix string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.kv {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out, nil
}

// tableSource captures public.items (id, v, region) for the job rules.
type tableSource struct{ signalSource }

func (tableSource) Tables() []string { return []string{"public.items"} }
func (tableSource) Columns(context.Context, string) ([]string, error) {
	return []string{"id", "v", "region"}, nil
}
func (tableSource) EstimateRows(context.Context, string) (int64, error) { return 10, nil }

func filter(t *testing.T, s string) []sources.Filter {
	t.Helper()
	f, err := sources.ParseFilter(s)
	if err != nil {
		t.Fatal(err)
	}
	return []sources.Filter{f}
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not mention %q", err, p)
		}
	}
}

// One job runs per table: the same request resumes it, another is refused
// naming --cancel; a filtered request never replaces a gap repair; a
// cancelled job is stored so, and a restart does not resume it.
func TestJobRules(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	m := New(Config{Source: "pg1"}, tableSource{}, st)

	first, err := m.Start(ctx, []string{"public.items"}, filter(t, "region = eu"), ReasonRequest)
	if err != nil {
		t.Fatal(err)
	}
	again, err := m.Start(ctx, []string{"public.items"}, filter(t, "region = eu"), ReasonRequest)
	if err != nil || again[0].ID != first[0].ID {
		t.Fatalf("the same request got %v, %v; want job %s back", again, err, first[0].ID)
	}
	_, err = m.Start(ctx, []string{"public.items"}, nil, ReasonRequest)
	wantErr(t, err, "already has a running backfill", first[0].ID, "region = eu", "--cancel public.items")

	// Filters are checked against the table before anything is queued.
	_, err = m.Start(ctx, []string{"public.items"}, filter(t, "Region = eu"), ReasonRequest)
	wantErr(t, err, `no column "Region"`, "did you mean region")
	if !errors.Is(err, sources.ErrBadFilter) {
		t.Errorf("error is not ErrBadFilter: %v", err)
	}

	// A gap replaces whatever runs.
	gap, err := m.start(ctx, []string{"public.items"}, nil, ReasonGap, "gap.pg1.x")
	if err != nil || gap[0].ID == first[0].ID && gap[0].Reason != ReasonGap {
		t.Fatalf("gap repair: %v, %v", gap, err)
	}
	if cur, _ := m.current("public.items"); cur.Reason != ReasonGap || st.kv[jobKey("pg1", "public.items")] == nil {
		t.Fatalf("current job %+v, want the gap repair", cur)
	}
}

func TestGapRepairIsNotReplacedByAFilteredRequest(t *testing.T) {
	ctx := context.Background()
	m := New(Config{Source: "pg1"}, tableSource{}, &memStore{})
	gap, err := m.start(ctx, []string{"public.items"}, nil, ReasonGap, "gap.pg1.20261130T000000.000000000Z")
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Start(ctx, []string{"public.items"}, filter(t, "id > 5"), ReasonRequest)
	wantErr(t, err, "being repaired after a lost log position", gap[0].ID, "gap.pg1.20261130T000000.000000000Z", "wait for job")
	// An unfiltered request is covered by the repair: it gets that job.
	got, err := m.Start(ctx, []string{"public.items"}, nil, ReasonRequest)
	if err != nil || got[0].ID != gap[0].ID {
		t.Fatalf("unfiltered request during a gap repair: %v, %v", got, err)
	}
}

func TestCancel(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	m := New(Config{Source: "pg1"}, tableSource{}, st)
	_, err := m.Cancel(ctx, []string{"public.items"})
	wantErr(t, err, "no running backfill of public.items")

	jobs, err := m.Start(ctx, []string{"public.items"}, nil, ReasonFlag)
	if err != nil {
		t.Fatal(err)
	}
	// A chunk waiting for its high watermark is abandoned.
	w := &window{id: "c1", table: "public.items", done: make(chan result, 1)}
	m.wins = []*window{w}
	if _, err := m.Cancel(ctx, []string{"public.items"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-w.done:
		if !errors.Is(r.err, errCancelled) {
			t.Fatalf("the waiting chunk ended with %v", r.err)
		}
	default:
		t.Fatal("cancel did not end the waiting chunk")
	}
	// The runner's next cursor save is dropped: the job stays cancelled.
	j := jobs[0]
	j.Chunks = 3
	if err := m.save(ctx, j); err != nil {
		t.Fatal(err)
	}
	stored, err := LoadJobs(ctx, st, "pg1")
	if err != nil || len(stored) != 1 || stored[0].State != StateCancelled || stored[0].Chunks != 0 {
		t.Fatalf("stored jobs %+v, %v; want one cancelled job", stored, err)
	}
	// A restart does not resume it.
	m2 := New(Config{Source: "pg1"}, tableSource{}, st)
	if err := m2.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := m2.next(); ok {
		t.Fatal("a cancelled job would resume after a restart")
	}
}

// A job stored by an older sluice with SQL text is failed at load, never
// run, and its SQL is not kept.
func TestLegacyWhereJobIsNeverRun(t *testing.T) {
	ctx := context.Background()
	st := &memStore{}
	b, _ := json.Marshal(map[string]any{"id": "x", "source": "pg1", "table": "public.items", "state": "running",
		"where": "false) UNION ALL SELECT ssn FROM users --", "chunk_size": 10})
	if err := st.Put(ctx, jobKey("pg1", "public.items"), b); err != nil {
		t.Fatal(err)
	}
	m := New(Config{Source: "pg1"}, tableSource{}, st)
	if err := m.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.next(); ok {
		t.Fatal("a job with SQL text would run")
	}
	raw, _, _ := st.Get(ctx, jobKey("pg1", "public.items"))
	if strings.Contains(string(raw), "UNION") || !strings.Contains(string(raw), "--filter") {
		t.Fatalf("stored job: %s", raw)
	}
}

// Control requests are decoded strictly: the old where field and any
// unknown field are refused by name.
func TestDecodeStrict(t *testing.T) {
	var req Request
	err := decodeStrict([]byte(`{"tables":["public.orders"],"where":"false) UNION ALL SELECT 1 --"}`), &req)
	wantErr(t, err, `unknown field "where"`, "filters", "--filter")
	err = decodeStrict([]byte(`{"tables":["public.orders"],"filter":[]}`), &req)
	wantErr(t, err, `unknown field "filter"`)
	err = decodeStrict([]byte(`{"tables":["a.b"]} {"tables":["c.d"]}`), &req)
	wantErr(t, err, "trailing data")
	if err := decodeStrict([]byte(`{"tables":["public.orders"],"filters":[{"column":"id","op":"in","values":["1","2"]}]}`), &req); err != nil {
		t.Fatal(err)
	}
	if len(req.Filters) != 1 || req.Filters[0].Op != "in" {
		t.Fatalf("decoded %+v", req)
	}
}

// tooLarge refuses one row as NATS would.
type tooLarge struct {
	recorder
	id string
}

func (r *tooLarge) Change(ctx context.Context, c *sources.Change) error {
	if string(c.After[0]) == r.id {
		return capture.ErrDeadLettered
	}
	return r.recorder.Change(ctx, c)
}

// A backfill row too large for NATS is kept in the chunk event's keep
// list, so consumers do not delete their copy of it; the rest goes on.
func TestTapKeepsADeadLetteredRow(t *testing.T) {
	m := New(Config{Source: "pg1"}, signalSource{}, nil)
	w := &window{id: "c1", table: "public.items", events: true, done: make(chan result, 1)}
	m.wins = []*window{w}
	out := &tooLarge{id: "2"}
	ctx := context.Background()
	for _, c := range []*sources.Change{signal("low", "c1", 100)} {
		if _, err := m.Change(ctx, c, out); err != nil {
			t.Fatal(err)
		}
	}
	w.chunk, w.ready = sources.Chunk{Table: items, Rows: [][]sources.Value{row("1", "1"), row("2", "2"), row("3", "3")}}, true
	if _, err := m.Change(ctx, signal("high", "c1", 101), out); err != nil {
		t.Fatal(err)
	}
	r := <-w.done
	if r.err != nil || r.emitted != 2 || len(out.rows) != 2 {
		t.Fatalf("emitted %d rows (%v), want 2", r.emitted, r.err)
	}
	if len(out.chunks) != 1 || len(out.chunks[0].Keep) != 1 || string(out.chunks[0].Keep[0][0]) != "2" {
		t.Fatalf("chunk event %+v, want keep [[2]]", out.chunks)
	}
}
