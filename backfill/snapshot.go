package backfill

import (
	"context"
	"time"

	"github.com/sluice-cdc/sluice/checkpoint"
)

// snapshot records that a table had, or has running, a backfill of every
// row: from then on its consumers hold the whole table, and the initial
// snapshot is not taken again.
type snapshot struct {
	Table string    `json:"table"`
	Job   string    `json:"job,omitempty"` // "" for a table captured before initial snapshots existed
	At    time.Time `json:"at"`
}

func snapshotKey(source, table string) string {
	return "snapshot." + source + "." + checkpoint.KeyToken(table)
}

// snapshotsSince marks a store whose tables are recorded: a store written
// before it has tables captured without a recorded snapshot.
func snapshotsSince(source string) string { return "snapshot." + source }

// Initial queues the initial snapshot of every captured table that never
// had one: on a first start (no checkpoint) every table, later a table that
// joined the config. A store from a sluice before initial snapshots
// counts its tables as snapshotted: backfilling them all on an upgrade would
// be a surprise; sluice backfill does it on request. A table with a backfill
// running is left to it (and snapshotted at a later start if that one was
// filtered).
func (m *Manager) Initial(ctx context.Context, firstStart bool) ([]Job, error) {
	_, recorded, err := m.store.Get(ctx, snapshotsSince(m.cfg.Source))
	if err != nil {
		return nil, err
	}
	legacy := !recorded && !firstStart
	var todo []string
	for _, t := range m.src.Tables() {
		_, done, err := m.store.Get(ctx, snapshotKey(m.cfg.Source, t))
		if err != nil {
			return nil, err
		}
		switch {
		case done:
		case legacy:
			if err := putJSON(ctx, m.store, snapshotKey(m.cfg.Source, t), snapshot{Table: t, At: time.Now().UTC()}); err != nil {
				return nil, err
			}
			m.log.Info("table captured before initial snapshots: not snapshotted now (sluice backfill does it on request)", "table", t)
		default:
			if cur, running := m.current(t); running {
				m.log.Info("initial snapshot waits: the table has a backfill running", "table", t, "job", cur.ID)
				continue
			}
			todo = append(todo, t)
		}
	}
	var jobs []Job
	if len(todo) > 0 {
		if jobs, err = m.start(ctx, todo, nil, ReasonInitial, ""); err != nil {
			return jobs, err
		}
	}
	if !recorded {
		if err := putJSON(ctx, m.store, snapshotsSince(m.cfg.Source), snapshot{At: time.Now().UTC()}); err != nil {
			return jobs, err
		}
	}
	return jobs, nil
}
