// Package backfill replays tables into the stream while the log keeps
// flowing, with DBLog watermarks (DESIGN.md "Checkpoints, outages and
// backfill"): for each key chunk a low watermark, the chunk's SELECT, a high
// watermark; at the high watermark the chunk's rows that the log did not
// change in between are published as op "r", followed by the chunk event
// that lets consumers drop rows deleted while the log was gone.
package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sources"
)

// Job states.
const (
	StateRunning   = "running"
	StateDone      = "done"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
)

// Why a job runs.
const (
	ReasonFlag    = "flag"    // sluice run --backfill
	ReasonRequest = "request" // sluice backfill, over the control subject
	ReasonGap     = "gap"     // the log position was lost
	// ReasonInitial is the table's initial snapshot (backfill.initial), on
	// a first start or when the table joins the captured ones.
	ReasonInitial = "initial"
)

// Job is one table's backfill, as kept in the checkpoint store: after a
// restart it resumes at Cursor.
type Job struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Table  string `json:"table"`
	// Filters select a subset of the rows; such a job publishes no chunk
	// events (they would delete the rows left out).
	Filters []sources.Filter `json:"filters,omitempty"`
	// LegacyWhere is the SQL condition of a job stored by an older sluice.
	// It is never run: such a job is failed at load, naming the fix.
	LegacyWhere string `json:"where,omitempty"`
	ChunkSize   int    `json:"chunk_size"`
	// Reason is why it runs: ReasonFlag, ReasonRequest, ReasonGap or
	// ReasonInitial.
	Reason string `json:"reason"`
	// Gap is the key of the gap record a ReasonGap job repairs.
	Gap string `json:"gap,omitempty"`
	// Cursor is the first key of the next chunk, in event JSON form; nil
	// before the first chunk.
	Cursor []sources.Value `json:"cursor"`
	Chunks int64           `json:"chunks_done"`
	Rows   int64           `json:"rows_done"`
	// Estimate is the table's row count when the job started.
	Estimate int64  `json:"rows_estimated"`
	State    string `json:"state"`
	// Error says why the job failed. Database errors are kept as their
	// SQLSTATE and a description without values (sources.DBError).
	Error    string    `json:"error,omitempty"`
	Started  time.Time `json:"started"`
	Updated  time.Time `json:"updated"`
	Finished time.Time `json:"finished,omitzero"`
}

// ChunksEstimated is about how many chunks the job reads in all.
func (j Job) ChunksEstimated() int64 {
	if j.ChunkSize <= 1 {
		return 0
	}
	// Chunks overlap by their boundary row.
	per := int64(j.ChunkSize - 1)
	return max(1, (j.Estimate+per-1)/per)
}

// Gap is a stretch of the log that was lost, as recorded in the store.
type Gap struct {
	Source   string           `json:"source"`
	From     sources.Position `json:"from"` // the checkpoint that could not be resumed
	To       sources.Position `json:"to"`   // where streaming resumed
	Detected time.Time        `json:"detected"`
	Cause    string           `json:"cause"`
	Jobs     []string         `json:"jobs,omitempty"` // the backfills that repair it
}

// Store keeps jobs and gaps: the checkpoint bucket.
type Store interface {
	Get(ctx context.Context, key string) ([]byte, bool, error)
	Put(ctx context.Context, key string, value []byte) error
	Keys(ctx context.Context, prefix string) ([]string, error)
}

func jobPrefix(source string) string { return "backfill." + source + "." }

// jobKey is one key per table: a table has at most one job at a time.
func jobKey(source, table string) string { return jobPrefix(source) + checkpoint.KeyToken(table) }

func gapKey(source string, t time.Time) string {
	return "gap." + source + "." + t.UTC().Format("20060102T150405.000000000Z")
}

func putJSON(ctx context.Context, st Store, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return st.Put(ctx, key, b)
}

// LoadJobs reads the backfill jobs of a source from the store.
func LoadJobs(ctx context.Context, st Store, source string) ([]Job, error) {
	var jobs []Job
	err := loadJSON(ctx, st, jobPrefix(source), "backfill job", func(b []byte) error {
		var j Job
		err := json.Unmarshal(b, &j)
		jobs = append(jobs, j)
		return err
	})
	return jobs, err
}

// LoadGaps reads the gaps recorded for a source, oldest first.
func LoadGaps(ctx context.Context, st Store, source string) ([]Gap, error) {
	var gaps []Gap
	err := loadJSON(ctx, st, "gap."+source+".", "gap record", func(b []byte) error {
		var g Gap
		err := json.Unmarshal(b, &g)
		gaps = append(gaps, g)
		return err
	})
	return gaps, err
}

func loadJSON(ctx context.Context, st Store, prefix, what string, each func([]byte) error) error {
	keys, err := st.Keys(ctx, prefix)
	if err != nil {
		return err
	}
	sort.Strings(keys)
	for _, k := range keys {
		b, ok, err := st.Get(ctx, k)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if err := each(b); err != nil {
			return fmt.Errorf("%s %s in the checkpoint bucket is corrupt: %w", what, k, err)
		}
	}
	return nil
}
