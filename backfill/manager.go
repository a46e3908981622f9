package backfill

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/capture"
)

// Source is what a backfill needs of a database source: every
// sources.Source is one.
type Source interface {
	sources.Backfiller
	// Reset gives up a lost log position and returns the current one.
	Reset(ctx context.Context) (sources.Position, error)
}

var _ Source = sources.Source(nil)

// Pipeline is the stream a backfill publishes through.
type Pipeline interface {
	// Flush waits until everything handed to the publisher is stored.
	Flush(ctx context.Context) error
	// WaitStreaming waits until the log is open, so that a watermark
	// written from then on will come through it.
	WaitStreaming(ctx context.Context) error
}

// Config configures backfills of one source.
type Config struct {
	Source    string // source name
	ChunkSize int    // rows per chunk, at least 2; default 2048
	// OnGap is "backfill" (record the gap, resume streaming at the current
	// position and backfill every captured table) or "fail".
	OnGap string
	// StatementTimeout bounds each chunk's SELECT on the server
	// (backfill.statement_timeout); 0 leaves the server's setting.
	StatementTimeout time.Duration
	Metrics          *Metrics // optional
	Log              *slog.Logger
}

// DefaultChunkSize keeps a chunk's SELECT short and its events well under
// the publisher's window.
const DefaultChunkSize = 2048

// Manager runs backfill jobs, one chunk at a time, and is the pipeline's
// Tap: it watches the log for its watermarks.
type Manager struct {
	cfg   Config
	src   Source
	store Store
	log   *slog.Logger

	// saveMu orders the writes of job records, so that a cancel and a
	// chunk's cursor never overwrite each other out of order.
	saveMu sync.Mutex

	mu   sync.Mutex
	jobs map[string]*Job // by table: the current job of each
	// wins are the chunks whose watermarks are written or being written,
	// in the order their windows open in the log: a chunk's window opens
	// once the one before it has written its high watermark, so at most
	// one of them is between its watermarks as the log reaches it.
	wins   []*window
	recent recentTxs
	wake   chan struct{}
	// pendingGap is touched only by OnGap, which the pipeline calls from
	// one goroutine.
	pendingGap pendingGap
}

// recentTxs remembers the transactions the log brought lately, in order,
// so that a chunk can tell whether one its snapshot could not see had
// committed before its low watermark (sources.Chunk.Invisible).
type recentTxs struct {
	seq  uint64
	last uint64            // the latest transaction added
	seen map[uint64]uint64 // transaction → seq
	ring []uint64          // the transactions, oldest overwritten first
}

const recentTxsKept = 1 << 16

func (r *recentTxs) add(tx uint64) {
	if tx == r.last && r.seq > 0 {
		return
	}
	if r.seen == nil {
		r.seen = make(map[uint64]uint64)
		r.ring = make([]uint64, recentTxsKept)
	}
	r.seq++
	r.last = tx
	slot := r.seq % recentTxsKept
	if old := r.ring[slot]; r.seen[old] == r.seq-recentTxsKept {
		delete(r.seen, old)
	}
	r.ring[slot] = tx
	r.seen[tx] = r.seq
}

// window is one chunk's state between its low and high watermarks.
type window struct {
	id     string
	table  string
	events bool // publish the chunk event (not for filtered backfills)

	open      bool   // the low watermark was seen
	lowSeq    uint64 // recentTxs.seq at the low watermark
	changed   map[string][]sources.Value
	truncated bool

	ready    bool // the chunk's rows are read
	chunk    sources.Chunk
	from, to []sources.Value
	emitting bool
	closed   bool // its outcome is decided: it takes no more changes

	done chan result
}

// addWindow queues w, which is about to write its low watermark.
func (m *Manager) addWindow(w *window) {
	m.mu.Lock()
	m.wins = append(m.wins, w)
	m.mu.Unlock()
}

// removeWindow forgets w: its watermarks, should they still come through
// the log, are those of a finished chunk.
func (m *Manager) removeWindow(w *window) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.wins = slices.DeleteFunc(m.wins, func(x *window) bool { return x == w })
}

// windowLocked is the queued window of a watermark's id, or nil. m.mu
// must be held.
func (m *Manager) windowLocked(id string) *window {
	for _, w := range m.wins {
		if w.id == id {
			return w
		}
	}
	return nil
}

type result struct {
	emitted int
	err     error
}

// errRetryChunk asks the runner to read a chunk again.
var errRetryChunk = errors.New("chunk must be read again")

// errCancelled abandons the chunk of a cancelled job.
var errCancelled = errors.New("backfill cancelled")

// New returns a manager; Load reads the jobs a previous run left.
func New(cfg Config, src Source, store Store) *Manager {
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = DefaultChunkSize
	}
	if cfg.ChunkSize < 2 {
		cfg.ChunkSize = 2 // a full chunk must move past its first key
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		cfg: cfg, src: src, store: store, log: cfg.Log.With("component", "backfill"),
		jobs: make(map[string]*Job), wake: make(chan struct{}, 1),
	}
}

// Load reads the jobs of this source from the store; unfinished ones
// resume at their last chunk when Run starts.
func (m *Manager) Load(ctx context.Context) error {
	jobs, err := LoadJobs(ctx, m.store, m.cfg.Source)
	if err != nil {
		return err
	}
	var resumed []Job
	for _, j := range jobs {
		if j.State == StateRunning && j.LegacyWhere != "" {
			// Stored by a sluice that took SQL text from the network: never
			// run it, and keep none of it.
			j.State, j.LegacyWhere, j.Finished = StateFailed, "", time.Now().UTC()
			j.Error = "stored by an older sluice with an SQL --where condition, which is no longer run: request the backfill again with --filter"
			if err := putJSON(ctx, m.store, jobKey(m.cfg.Source, j.Table), j); err != nil {
				return err
			}
			m.log.Warn("backfill job with an SQL condition from an older sluice failed instead of resumed", "job", j.ID, "table", j.Table)
		}
		m.mu.Lock()
		m.jobs[j.Table] = &j
		m.mu.Unlock()
		if j.State == StateRunning {
			m.log.Info("resuming backfill", "job", j.ID, "table", j.Table, "reason", j.Reason, "chunks_done", j.Chunks, "rows_done", j.Rows)
			resumed = append(resumed, j)
		}
		m.cfg.Metrics.observe(j)
	}
	// Once every job is loaded: a Load that failed is tried again whole.
	for _, j := range resumed {
		m.advise(ctx, j)
	}
	return nil
}

// Jobs returns every job of this source, newest first.
func (m *Manager) Jobs() []Job {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Job, 0, len(m.jobs))
	for _, j := range m.jobs {
		out = append(out, *j)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Started.After(out[b].Started) })
	return out
}

// Start queues a backfill of each table, or refuses the whole request
// with the reason. One job runs per table: a request for a table whose job
// still runs with the same filters gets that job back (so repeating a
// request, or restarting with --backfill, resumes rather than starts
// over); one with other filters is refused, and so is a filtered request
// while a gap repair runs, which it would leave incomplete. Reason
// ReasonGap always starts over, since the earlier chunks predate the gap.
func (m *Manager) Start(ctx context.Context, tables []string, filters []sources.Filter, reason string) ([]Job, error) {
	return m.start(ctx, tables, filters, reason, "")
}

func (m *Manager) start(ctx context.Context, tables []string, filters []sources.Filter, reason, gap string) ([]Job, error) {
	captured := m.src.Tables()
	var unknown []string
	for _, t := range tables {
		if !slices.Contains(captured, t) {
			unknown = append(unknown, t)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(captured)
		return nil, fmt.Errorf("cannot backfill %s: not captured by source %s (captured: %s)",
			strings.Join(unknown, ", "), m.cfg.Source, strings.Join(captured, ", "))
	}
	// Everything is checked before anything is queued.
	keepCurrent := make(map[string]bool)
	for _, t := range tables {
		if len(filters) > 0 {
			cols, err := m.src.Columns(ctx, t)
			if err != nil {
				return nil, err
			}
			if err := sources.ValidateFilters(t, cols, filters); err != nil {
				return nil, err
			}
		}
		cur, ok := m.current(t)
		if !ok || reason == ReasonGap {
			continue
		}
		switch {
		case cur.Reason == ReasonGap && len(filters) > 0:
			return nil, fmt.Errorf("table %s is being repaired after a lost log position (job %s, gap %s): a filtered backfill would replace that repair, and rows deleted during the gap would stay in consumers' copies; wait for job %s to finish (sluice status), then ask again",
				t, cur.ID, cur.Gap, cur.ID)
		case cur.Reason == ReasonGap || sameFilters(cur.Filters, filters):
			keepCurrent[t] = true
		default:
			return nil, fmt.Errorf("table %s already has a running backfill (job %s%s); one job runs per table: wait for it to finish, or stop it with sluice backfill --cancel %s",
				t, cur.ID, describeFilters(cur.Filters), t)
		}
	}
	var out []Job
	for _, t := range tables {
		if keepCurrent[t] {
			cur, _ := m.current(t)
			out = append(out, cur)
			continue
		}
		est, err := m.src.EstimateRows(ctx, t)
		if err != nil {
			return out, err
		}
		now := time.Now().UTC()
		j := &Job{
			ID:     strconv.FormatInt(now.UnixNano(), 36) + "-" + checkpoint.KeyToken(t), // unique: a gap may replace a job within a millisecond
			Source: m.cfg.Source, Table: t, Filters: filters, ChunkSize: m.cfg.ChunkSize, Reason: reason, Gap: gap,
			Estimate: est, State: StateRunning, Started: now, Updated: now,
		}
		m.saveMu.Lock()
		err = putJSON(ctx, m.store, jobKey(m.cfg.Source, t), j)
		if err == nil && len(filters) == 0 {
			// Every row: the table counts as snapshotted; the job resumes
			// after a restart.
			err = putJSON(ctx, m.store, snapshotKey(m.cfg.Source, t), snapshot{Table: t, Job: j.ID, At: now})
		}
		if err == nil {
			m.mu.Lock()
			m.jobs[t] = j
			m.mu.Unlock()
		}
		m.saveMu.Unlock()
		if err != nil {
			return out, err
		}
		m.cfg.Metrics.observe(*j)
		m.log.Info("backfill queued", "job", j.ID, "table", t, "reason", reason, "rows_estimated", est, "chunk_size", j.ChunkSize, "filters", len(filters))
		m.advise(ctx, *j)
		out = append(out, *j)
	}
	m.kick()
	return out, nil
}

func (m *Manager) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func sameFilters(a, b []sources.Filter) bool {
	return slices.EqualFunc(a, b, func(x, y sources.Filter) bool {
		return x.Column == y.Column && x.Op == y.Op && slices.Equal(x.Values, y.Values)
	})
}

func describeFilters(fs []sources.Filter) string {
	if len(fs) == 0 {
		return ""
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = f.String()
	}
	return ", filters " + strings.Join(parts, " and ")
}

// current returns the running job of table, if there is one.
func (m *Manager) current(table string) (Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.jobs[table]; cur != nil && cur.State == StateRunning {
		return *cur, true
	}
	return Job{}, false
}

// Cancel stops the running jobs of tables: each is stored as cancelled, so
// a restart does not resume it, and a chunk in flight is abandoned.
// Cancelling a gap repair leaves consumers' copies with the rows deleted
// during the gap; the log says so.
func (m *Manager) Cancel(ctx context.Context, tables []string) ([]Job, error) {
	var missing []string
	for _, t := range tables {
		if _, ok := m.current(t); !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no running backfill of %s to cancel (sluice status lists the jobs)", strings.Join(missing, ", "))
	}
	var out []Job
	for _, t := range tables {
		m.saveMu.Lock()
		j, ok := m.current(t)
		if !ok {
			m.saveMu.Unlock()
			continue // finished meanwhile
		}
		now := time.Now().UTC()
		j.State, j.Updated, j.Finished = StateCancelled, now, now
		err := putJSON(ctx, m.store, jobKey(m.cfg.Source, t), j)
		if err == nil {
			m.mu.Lock()
			if cur := m.jobs[t]; cur != nil && cur.ID == j.ID {
				*cur = j
			}
			for _, w := range m.wins {
				if w.table == t && !w.emitting {
					w.finish(result{err: errCancelled})
				}
			}
			m.mu.Unlock()
		}
		m.saveMu.Unlock()
		if err != nil {
			return out, err
		}
		m.cfg.Metrics.observe(j)
		if j.Reason == ReasonGap {
			m.log.Warn("gap repair cancelled: rows deleted during the gap stay in consumers' copies until the table is backfilled again", "job", j.ID, "table", t, "gap", j.Gap)
		} else {
			m.log.Info("backfill cancelled", "job", j.ID, "table", t, "chunks_done", j.Chunks, "rows_done", j.Rows)
		}
		out = append(out, j)
	}
	return out, nil
}

// OnGap handles a lost log position (capture.Config.OnGap).
func (m *Manager) OnGap(ctx context.Context, lost sources.Position, cause error) (sources.Position, error) {
	if m.cfg.OnGap == "fail" {
		return "", fmt.Errorf("%w; backfill.on_gap is \"fail\", so sluice stops: set backfill.on_gap: backfill to record the gap and backfill the captured tables automatically", cause)
	}
	now := time.Now().UTC()
	key := gapKey(m.cfg.Source, now)
	// A repair retried after the source was unreachable keeps its record.
	if g := m.pendingGap; g.lost == lost && g.key != "" {
		now, key = g.at, g.key
	}
	m.pendingGap = pendingGap{lost: lost, key: key, at: now}
	// The jobs are stored before the position moves on: a crash in between
	// finds the position lost again and starts over.
	jobs, err := m.start(ctx, m.src.Tables(), nil, ReasonGap, key)
	if err != nil {
		return "", fmt.Errorf("log position lost and the backfill that repairs it cannot start: %w", err)
	}
	gap := Gap{Source: m.cfg.Source, From: lost, Detected: now, Cause: cause.Error()}
	for _, j := range jobs {
		gap.Jobs = append(gap.Jobs, j.ID)
	}
	if err := putJSON(ctx, m.store, key, gap); err != nil {
		return "", err
	}
	// The chunks in flight may wait for a watermark that went with the log.
	m.mu.Lock()
	for _, w := range m.wins {
		if !w.emitting {
			w.finish(result{err: errRetryChunk})
		}
	}
	m.mu.Unlock()
	pos, err := m.src.Reset(ctx)
	if err != nil {
		return "", err
	}
	gap.To = pos
	if err := putJSON(ctx, m.store, key, gap); err != nil {
		return "", err
	}
	m.pendingGap = pendingGap{}
	m.cfg.Metrics.gap()
	m.log.Warn("log position lost: gap recorded, streaming resumes at the current position, and every captured table is backfilled",
		"from", lost, "to", pos, "gap", key, "tables", len(jobs), "cause", cause)
	return pos, nil
}

// pendingGap is a gap whose repair has not started yet.
type pendingGap struct {
	lost sources.Position
	key  string
	at   time.Time
}

// Change is the Tap: it drops the signal table's changes, opens and closes
// chunk windows at their watermarks, and notes the keys the log changes
// inside a window.
func (m *Manager) Change(ctx context.Context, c *sources.Change, out capture.Emitter) (bool, error) {
	if sig, ok := m.src.ReadSignal(c); ok {
		if sig.Source == m.cfg.Source {
			return true, m.watermark(ctx, sig, c, out)
		}
		return true, nil // another sluice's watermark
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recent.add(c.TxID)
	for _, w := range m.wins {
		if !w.open || w.emitting || w.closed || c.Table.QualifiedName() != w.table {
			continue
		}
		if c.Op == sources.OpTruncate {
			w.truncated = true
			continue
		}
		k := c.KeyValues()
		w.changed[string(sink.AppendCanonicalKey(nil, k))] = k
	}
	return false, nil
}

func (m *Manager) watermark(ctx context.Context, sig sources.Signal, c *sources.Change, out capture.Emitter) error {
	m.mu.Lock()
	w := m.windowLocked(sig.ID)
	if w == nil || w.emitting || w.closed {
		m.mu.Unlock()
		return nil // a finished chunk's watermark, replayed
	}
	switch sig.Kind {
	case "low":
		// Seen again when the stream replays after a reconnect: start over.
		w.open, w.truncated, w.lowSeq = true, false, m.recent.seq
		w.changed = make(map[string][]sources.Value)
		m.mu.Unlock()
		return nil
	case "high":
	default:
		m.mu.Unlock()
		return nil
	}
	if !w.open || !w.ready {
		w.finish(result{err: errRetryChunk})
		m.mu.Unlock()
		return nil
	}
	for _, tx := range w.chunk.Invisible {
		// Committed before the low watermark, yet not visible to the
		// chunk's snapshot (PostgreSQL makes a commit visible a moment
		// after logging it): the chunk may hold rows older than the log.
		if seq, ok := m.recent.seen[tx]; ok && seq <= w.lowSeq {
			m.log.Info("reading the chunk again: a transaction logged before its low watermark was not yet visible to it", "chunk", w.id, "txid", tx)
			w.finish(result{err: errRetryChunk})
			m.mu.Unlock()
			return nil
		}
	}
	w.emitting = true
	m.mu.Unlock()

	n, err := w.emit(ctx, c, out)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		// The stream replays this transaction; emit again then (the
		// message ids are the same, so nothing is stored twice).
		w.emitting = false
		return err
	}
	w.finish(result{emitted: n})
	return nil
}

// emit publishes the chunk's rows that the log did not change inside the
// window, at the high watermark's position, then its chunk event.
func (w *window) emit(ctx context.Context, at *sources.Change, out capture.Emitter) (int, error) {
	n := 0
	// The chunk re-reads the previous chunk's last row, which its chunk
	// event must then cover; without chunk events it is a mere repeat.
	var boundary string
	if !w.events && w.from != nil {
		boundary = string(sink.AppendCanonicalKey(nil, w.from))
	}
	for _, row := range w.chunk.Rows {
		if w.truncated {
			break
		}
		key := string(sink.AppendCanonicalKey(nil, keyOf(w.chunk.Table, row)))
		if _, changed := w.changed[key]; changed || key == boundary {
			continue // the log's version is newer, and already published
		}
		err := out.Change(ctx, &sources.Change{
			Op: sources.OpRead, Table: w.chunk.Table, After: row,
			Pos: at.Pos, TxID: at.TxID, CommitTime: at.CommitTime, Chunk: w.id,
		})
		if errors.Is(err, capture.ErrDeadLettered) {
			// Too large for NATS: the dead-letter subject has its key. The
			// chunk event must not delete the consumers' copy of the row.
			w.changed[key] = keyOf(w.chunk.Table, row)
			continue
		}
		if err != nil {
			return n, err
		}
		n++
	}
	if !w.events {
		return n, nil
	}
	ch := &sink.Chunk{ID: w.id, Table: w.chunk.Table, From: bound(w.chunk.Table, w.from), To: bound(w.chunk.Table, w.to)}
	for _, k := range w.changed {
		if inRange(k, ch.From, ch.To) {
			ch.Keep = append(ch.Keep, k)
		}
	}
	sort.Slice(ch.Keep, func(a, b int) bool {
		return string(sink.AppendCanonicalKey(nil, ch.Keep[a])) < string(sink.AppendCanonicalKey(nil, ch.Keep[b]))
	})
	return n, out.Chunk(ctx, ch, at.Pos)
}

func (w *window) finish(r result) {
	w.closed = true
	select {
	case w.done <- r:
	default:
	}
}

func keyOf(t *sources.Table, row []sources.Value) []sources.Value {
	k := make([]sources.Value, len(t.Key))
	for i, c := range t.Key {
		k[i] = row[c]
	}
	return k
}

// bound writes a key as a chunk bound: decimals become JSON numbers, so
// consumers know to compare them numerically.
func bound(t *sources.Table, key []sources.Value) []sources.Value {
	if key == nil {
		return nil
	}
	out := make([]sources.Value, len(key))
	for i, v := range key {
		if len(v) > 1 && v[0] == '"' && t.ColumnKind(t.Key[i]) == sources.KindDecimal {
			v = v[1 : len(v)-1]
		}
		out[i] = v
	}
	return out
}

// inRange tells whether a key lies in [from, to]; keys that cannot be
// compared are kept (listing too many keys is safe, too few is not).
func inRange(key, from, to []sources.Value) bool {
	raw := func(k []sources.Value) []json.RawMessage {
		r := make([]json.RawMessage, len(k))
		for i, v := range k {
			r[i] = json.RawMessage(v)
		}
		return r
	}
	k := raw(key)
	if from != nil {
		if c, err := consumer.CompareKeys(k, raw(from)); err == nil && c < 0 {
			return false
		}
	}
	if to != nil {
		if c, err := consumer.CompareKeys(k, raw(to)); err == nil && c > 0 {
			return false
		}
	}
	return true
}
