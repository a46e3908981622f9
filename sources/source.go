package sources

import (
	"context"
	"errors"
)

// Source reads one database's replication log, and its tables for the
// backfill: everything the engine and the backfill ask of a database. A
// driver's Open returns one.
//
// The pipeline calls Stream, and after a failure calls it again from the last
// position it has stored, so a source keeps no delivery state of its own
// between calls. Ack is the only way the source learns what is safe to
// release (DESIGN.md: nothing is acknowledged early).
type Source interface {
	// Stream hands every change and commit after from to h in log order,
	// until ctx ends or an error occurs. An empty from means "where the
	// database's own bookmark is" (the slot's confirmed position).
	//
	// Once the server has accepted the start position, and before the
	// first Change of the call, Stream must call Opened(h): the backfill
	// writes its watermarks only then, so a source that forgets leaves
	// every backfill waiting (sourcetest.Run checks it). A Commit before
	// it may only record where the stream starts.
	//
	// Errors wrapping ErrDisconnected are worth retrying; any other error is
	// final and names what the operator must fix.
	Stream(ctx context.Context, from Position, h Handler) error
	// Ack records that every change up to and including the transaction that
	// ends at pos is durably stored, so the database may release its log.
	Ack(pos Position)
	// Close releases the source's connections.
	Close(ctx context.Context) error
	// Backfiller reads table chunks and writes watermarks, while Stream runs.
	Backfiller
	// Reset gives up a lost log position (ErrLogLost) and returns the
	// current one, where streaming resumes; the backfill repairs the gap.
	Reset(ctx context.Context) (Position, error)
	// Database is the database's name, the events' source.db.
	Database() string
	// RetainedBytes is how much log the database keeps for this source, in
	// bytes, as last measured; -1 when it keeps none for a reader (MySQL
	// keeps binlogs by age).
	RetainedBytes() int64
	// Start is where a first start (no checkpoint yet) captures from, when
	// the database keeps no bookmark for sluice: the engine saves it as
	// the first checkpoint before streaming, so a crash before the first
	// commit resumes there rather than at the log's end of the restart.
	// "" when the database keeps it (a PostgreSQL slot).
	Start() Position
}

// Handler receives what a source reads. Both calls may block to apply
// back-pressure; an error from either stops the stream.
type Handler interface {
	Change(ctx context.Context, c *Change) error
	Commit(ctx context.Context, c Commit) error
}

// Opener is implemented by handlers that want to know when a Stream call
// has opened the log: from then on every later commit reaches the
// handler, in this Stream call or, after a failure, in the next one. The
// backfill writes its watermarks only then.
type Opener interface {
	Opened()
}

// Opened tells h, if it wants to know, that the log is open.
func Opened(h Handler) {
	if o, ok := h.(Opener); ok {
		o.Opened()
	}
}

// Errors a source returns. Each is wrapped with the details and the fix.
var (
	// ErrDisconnected wraps a transient loss of the database connection.
	ErrDisconnected = errors.New("source disconnected")
	// ErrNoPrimaryKey: a captured table has no key sluice can use: no
	// primary key, no unique index the log carries, no source.keys entry.
	ErrNoPrimaryKey = errors.New("table has no primary key")
	// ErrLogLost: the log position to resume from no longer exists (slot
	// dropped or invalidated, binlog purged). The gap must be repaired.
	ErrLogLost = errors.New("log position lost")
	// ErrPrerequisite: the database is not configured for capture.
	ErrPrerequisite = errors.New("database prerequisite missing")
)
