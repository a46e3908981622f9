package sources

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"
)

// ErrUnsupportedKey: a table's key cannot be read in chunks in an order
// consumers can reproduce (DESIGN.md "Checkpoints, outages and backfill").
var ErrUnsupportedKey = errors.New("key type not supported for backfill")

// ChunkQuery asks a source for one chunk of a table in key order.
type ChunkQuery struct {
	Table string // schema.table (MySQL: db.table), one of the captured tables
	// From is the first key to read, inclusive, in the event's JSON form
	// and key-column order; nil starts at the table's first key.
	From []Value
	// Limit is the most rows to return.
	Limit int
	// Filters, when set, are conditions ANDed to the chunk's (a subset
	// backfill). Drivers check them against the table's columns, quote the
	// column and bind the values; no text of a filter becomes SQL.
	Filters []Filter
	// Timeout bounds the chunk's statement on the server (PostgreSQL
	// statement_timeout, MySQL MAX_EXECUTION_TIME, MariaDB
	// max_statement_time); 0 leaves the server's setting.
	Timeout time.Duration
}

// Chunk is what a source read for a ChunkQuery.
type Chunk struct {
	// Table is the table's shape as read; sources share it with the
	// stream, so an unchanged shape keeps its schema version.
	Table *Table
	// Rows are aligned with Table.Columns, in key order.
	Rows [][]Value
	// Invisible lists the transactions the chunk's snapshot saw as still
	// running (Postgres: its xip, as the log's TxID values). One of them
	// whose changes the log carries before the low watermark committed
	// there without being visible to the chunk: the chunk must be read
	// again. Nil when the source orders visibility like its log (MySQL
	// with binlog_order_commits).
	Invisible []uint64
}

// Signal is a watermark row of sluice's signal table, as read from the log.
type Signal struct {
	Source string // the sluice source that wrote it
	Kind   string // "low" or "high"
	ID     string // the chunk id
}

// Backfiller is what a source offers the backfill runner: reading chunks
// and writing watermarks on a connection of its own, while Stream runs.
type Backfiller interface {
	// Tables lists the captured tables as schema.table.
	Tables() []string
	// ReadChunk reads one chunk in key order: integers and decimals
	// numerically, text and uuid bytewise, composite keys lexicographically.
	// Errors wrapping ErrUnsupportedKey name the table and its key.
	ReadChunk(ctx context.Context, q ChunkQuery) (Chunk, error)
	// Columns lists the columns of a captured table, as named in events,
	// so that filters can be checked before a job starts.
	Columns(ctx context.Context, table string) ([]string, error)
	// EstimateRows returns about how many rows the table has.
	EstimateRows(ctx context.Context, table string) (int64, error)
	// WriteSignal writes a watermark to the signal table and commits it,
	// so that it appears in the log after everything committed before.
	WriteSignal(ctx context.Context, kind, id string) error
	// ReadSignal tells whether a change of the log is a signal-table row,
	// and if so returns it (an empty Source when it cannot be read).
	ReadSignal(c *Change) (Signal, bool)
}

// ChunkSQL completes "SELECT ... FROM table" into a chunk query: the rows
// whose key (keys, as compared and ordered) is at or after placeholders,
// when there are any, that match every one of conds (built by the driver
// from quoted identifiers and placeholders only), in key order, at most
// limit. The limit is always there: a chunk never reads a whole table.
func ChunkSQL(selectFrom string, keys, placeholders, conds []string, limit int) string {
	var where []string
	switch {
	case len(placeholders) == 1:
		where = append(where, keys[0]+" >= "+placeholders[0])
	case len(placeholders) > 1:
		where = append(where, "("+strings.Join(keys, ", ")+") >= ("+strings.Join(placeholders, ", ")+")")
	}
	for _, c := range conds {
		where = append(where, "("+c+")")
	}
	var b strings.Builder
	b.WriteString(selectFrom)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY " + strings.Join(keys, ", "))
	b.WriteString(" LIMIT " + strconv.Itoa(max(limit, 1)))
	return b.String()
}

// SignalRow decodes the columns source, kind and id of a signal-table
// change's row, by name; a column it cannot read stays empty.
func SignalRow(c *Change) Signal {
	var sig Signal
	for i, col := range c.Table.Columns {
		var v string
		if i >= len(c.After) || json.Unmarshal(c.After[i], &v) != nil {
			continue
		}
		switch col {
		case "source":
			sig.Source = v
		case "kind":
			sig.Kind = v
		case "id":
			sig.ID = v
		}
	}
	return sig
}
