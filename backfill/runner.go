package backfill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

// Run runs the queued jobs, oldest first and one chunk at a time, until
// ctx ends. f must be the pipeline whose Tap m is: a chunk's events are
// stored before its cursor is.
func (m *Manager) Run(ctx context.Context, f Pipeline) error {
	for {
		j, ok := m.next()
		if !ok {
			select {
			case <-ctx.Done():
				return nil
			case <-m.wake:
				continue
			}
		}
		m.runJob(ctx, f, j)
		if ctx.Err() != nil {
			return nil
		}
	}
}

// next returns a copy of the oldest running job.
func (m *Manager) next() (Job, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var best *Job
	for _, j := range m.jobs {
		if j.State == StateRunning && (best == nil || j.Started.Before(best.Started)) {
			best = j
		}
	}
	if best == nil {
		return Job{}, false
	}
	return *best, true
}

// live tells whether j is still its table's job and running: a gap
// replaces it, a cancel stops it.
func (m *Manager) live(j Job) bool {
	cur, ok := m.current(j.Table)
	return ok && cur.ID == j.ID
}

// save stores j and makes it the table's current job, unless a newer job
// replaced it or a cancel stopped it meanwhile.
func (m *Manager) save(ctx context.Context, j Job) error {
	j.Updated = time.Now().UTC()
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	if !m.live(j) {
		return nil
	}
	if err := putJSON(ctx, m.store, jobKey(j.Source, j.Table), j); err != nil {
		return err
	}
	m.mu.Lock()
	if cur := m.jobs[j.Table]; cur != nil && cur.ID == j.ID {
		*cur = j
	}
	m.mu.Unlock()
	m.cfg.Metrics.observe(j)
	return nil
}

// runJob runs j's chunks until it is done, failed, replaced or ctx ends.
// Chunks overlap twice over. While the stream emits a chunk at its high
// watermark, the next chunk writes its low watermark, reads its rows and
// writes its high one: its window opens after the chunk before it closed,
// in the log as here, so each chunk's rows are still decided against its
// own window alone. And while the next chunk is awaited, the pipeline
// flushes the last one and its cursor is saved. Cursors are still saved
// in order, each only after its chunk's events are stored, so a crash
// re-reads at most the chunks after the last saved cursor (their rows are
// emitted again, which the chunk rule tolerates).
func (m *Manager) runJob(ctx context.Context, f Pipeline, j Job) {
	log := m.log.With("job", j.ID, "table", j.Table)
	start, startRows := time.Now(), j.Rows
	lastLog := start
	failures := 0
	// saved is j as last stored; pending carries the outcome of the save
	// in flight (of the chunk before), and is drained before the next one
	// starts and before runJob returns.
	saved := j
	var (
		pending    chan error
		pendingJob Job
	)
	settle := func() error {
		if pending == nil {
			return nil
		}
		err := <-pending
		pending = nil
		if err == nil {
			saved = pendingJob
		}
		return err
	}
	defer func() { _ = settle() }()
	// ahead is the chunk after the one awaited, already opened.
	var ahead *openChunk
	defer func() {
		if ahead != nil {
			m.removeWindow(ahead.w)
		}
	}()
	for j.State == StateRunning && ctx.Err() == nil && m.live(j) {
		cur := ahead
		ahead = nil
		var err error
		if cur == nil {
			cur, err = m.open(ctx, f, j)
		}
		var next Job
		if err == nil {
			if cur.next.State == StateRunning {
				// A failure here is met again, and handled, when the
				// chunk is opened in its own turn.
				ahead, _ = m.open(ctx, f, cur.next)
			}
			next, err = m.await(ctx, cur)
		}
		if serr := settle(); serr != nil || err != nil {
			if err == nil {
				err = serr
			}
			// Go on from what is stored: a chunk whose save failed is
			// read again, and so is the one read meanwhile. The chunk
			// opened after it goes too: it starts where this one ended,
			// which a retry may move.
			j = saved
			if ahead != nil {
				m.removeWindow(ahead.w)
				ahead = nil
			}
		}
		switch {
		case err == nil:
			failures = 0
			pendingJob, pending = next, make(chan error, 1)
			go func() {
				err := f.Flush(ctx)
				if err == nil {
					err = m.save(ctx, next)
				}
				pending <- err
			}()
			j = next
		case ctx.Err() != nil, errors.Is(err, errCancelled):
			return
		case errors.Is(err, errRetryChunk):
			continue
		case retryable(err):
			failures++
			wait := min(time.Duration(failures)*time.Second, 30*time.Second)
			log.Warn("backfill chunk failed; retrying", "chunk", j.Chunks+1, "in", wait, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		default:
			j.State, j.Error, j.Finished = StateFailed, err.Error(), time.Now().UTC()
			log.Error("backfill failed; streaming goes on", "error", err)
			m.cfg.Metrics.end(j)
			if serr := m.save(context.WithoutCancel(ctx), j); serr != nil {
				log.Error("cannot record the failed backfill", "error", serr)
			}
			return
		}
		if j.State == StateDone {
			if err := settle(); err != nil {
				// The last chunk is not stored: read it again.
				j = saved
				if ctx.Err() != nil {
					return
				}
				log.Warn("backfill's last chunk not stored; retrying", "error", err)
				continue
			}
			log.Info("backfill done", "chunks", j.Chunks, "rows", j.Rows, "took", time.Since(j.Started).Round(time.Millisecond))
			m.cfg.Metrics.end(j)
			return
		}
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			rate := float64(j.Rows-startRows) / time.Since(start).Seconds()
			attrs := []any{"chunks_done", j.Chunks, "chunks_estimated", j.ChunksEstimated(), "rows_done", j.Rows,
				"rows_estimated", j.Estimate, "rows_per_s", int(rate)}
			if rate > 0 && j.Estimate > j.Rows {
				attrs = append(attrs, "eta", (time.Duration(float64(j.Estimate-j.Rows)/rate) * time.Second).Round(time.Second))
			}
			log.Info("backfill progress", attrs...)
		}
	}
}

// retryable errors are worth trying the chunk again for: the database or
// JetStream being away for a while.
func retryable(err error) bool {
	return errors.Is(err, sources.ErrDisconnected) || errors.Is(err, sources.ErrLoginRejected) ||
		errors.Is(err, sources.ErrLoginExpiring) || sink.Transient(err) || errors.Is(err, context.DeadlineExceeded)
}

// openChunk is a chunk whose watermarks are written and whose rows are
// read: the stream emits it when it reaches the high watermark.
type openChunk struct {
	w    *window
	next Job // the job once this chunk is done
	// When its steps ended, for the debug log.
	t0, t1, t2, t3 time.Time
}

// open writes a chunk's low watermark, reads its rows from j's cursor and
// writes its high watermark. Its window stays queued until await or the
// caller removes it.
func (m *Manager) open(ctx context.Context, f Pipeline, j Job) (*openChunk, error) {
	// An attempt's id is its own: after a crash or a gap the watermarks of
	// an earlier attempt at this chunk may still come through the log, and
	// must not close this one's window.
	id := fmt.Sprintf("%s-%d-%s", j.ID, j.Chunks+1, strconv.FormatInt(time.Now().UnixNano()%(36*36*36*36*36), 36))
	w := &window{id: id, table: j.Table, events: len(j.Filters) == 0, done: make(chan result, 1)}
	m.addWindow(w)
	c, err := m.fill(ctx, f, j, w)
	if err != nil {
		m.removeWindow(w)
		return nil, err
	}
	return c, nil
}

func (m *Manager) fill(ctx context.Context, f Pipeline, j Job, w *window) (*openChunk, error) {
	// A watermark written before the log is open (a first start, before
	// the slot exists; a gap, before the log is reset) would never come
	// through.
	if err := f.WaitStreaming(ctx); err != nil {
		return nil, err
	}
	c := &openChunk{w: w, t0: time.Now()}
	if err := m.src.WriteSignal(ctx, "low", w.id); err != nil {
		return nil, err
	}
	c.t1 = time.Now()
	ch, err := m.src.ReadChunk(ctx, sources.ChunkQuery{Table: j.Table, From: j.Cursor, Limit: j.ChunkSize, Filters: j.Filters, Timeout: m.cfg.StatementTimeout})
	if err != nil {
		return nil, err
	}
	var to []sources.Value
	if len(ch.Rows) == j.ChunkSize {
		to = keyOf(ch.Table, ch.Rows[len(ch.Rows)-1])
	}
	m.mu.Lock()
	w.chunk, w.from, w.to, w.ready = ch, j.Cursor, to, true
	m.mu.Unlock()
	c.t2 = time.Now()
	if err := m.src.WriteSignal(ctx, "high", w.id); err != nil {
		return nil, err
	}
	c.t3 = time.Now()

	read := int64(len(ch.Rows))
	if j.Cursor != nil && read > 0 {
		read-- // the boundary row, read by the previous chunk too
	}
	j.Chunks++
	j.Rows += read
	j.Cursor = to
	if to == nil {
		j.State = StateDone
	}
	c.next = j
	return c, nil
}

// await waits until the stream has emitted c's rows and chunk event into
// the pipeline, and returns the job with its cursor moved past them,
// which the caller saves once the pipeline has flushed them.
func (m *Manager) await(ctx context.Context, c *openChunk) (Job, error) {
	defer m.removeWindow(c.w)
	var res result
	for waited := time.Duration(0); ; {
		t := time.NewTimer(30 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return Job{}, ctx.Err()
		case res = <-c.w.done:
			t.Stop()
		case <-t.C:
			waited += 30 * time.Second
			m.log.Warn("backfill waits for its high watermark to come through the log; is streaming stuck?", "chunk", c.w.id, "waited", waited)
			continue
		}
		break
	}
	if res.err != nil {
		return Job{}, res.err
	}
	j := c.next
	if j.State == StateDone {
		j.Finished = time.Now().UTC()
	}
	m.log.Debug("chunk emitted", "chunk", c.w.id, "rows", len(c.w.chunk.Rows), "emitted", res.emitted,
		"low", c.t1.Sub(c.t0), "read", c.t2.Sub(c.t1), "high", c.t3.Sub(c.t2), "to_high", time.Since(c.t3))
	return j, nil
}
