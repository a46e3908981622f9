package backfill

import "context"

// ChunkAdvisor is a Source that can tell when reading a table's chunks in
// key order costs more than it should, and what fixes it: a PostgreSQL
// table whose text key no index orders by COLLATE "C" sorts the rest of
// the table for every chunk. A Source need not be one.
type ChunkAdvisor interface {
	// ChunkAdvice returns why reading table's chunks is slow and the fix,
	// both empty when nothing is amiss.
	ChunkAdvice(ctx context.Context, table string) (why, fix string, err error)
}

// advise logs, once for a job as it is queued or resumed, what would make
// its chunks cheaper to read, when the source can tell. The advice stops
// nothing: a failure to get it is logged at debug level only, since the
// job's own chunk reads report a source that cannot answer.
func (m *Manager) advise(ctx context.Context, j Job) {
	a, ok := m.src.(ChunkAdvisor)
	if !ok {
		return
	}
	why, fix, err := a.ChunkAdvice(ctx, j.Table)
	switch {
	case err != nil:
		m.log.Debug("cannot tell whether the backfill's chunk reads are served by an index", "job", j.ID, "table", j.Table, "err", err)
	case fix != "":
		m.log.Warn("backfill sorts the rest of the table for every chunk: no index serves its chunk order; run the statement in fix for a linear backfill",
			"job", j.ID, "table", j.Table, "why", why, "fix", fix)
	}
}
