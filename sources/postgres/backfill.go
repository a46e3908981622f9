package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources"
)

// Key types a chunk can be ordered by in a way consumers reproduce:
// integers and numerics numerically, text and uuid bytewise.
var chunkKeyTypes = map[uint32]string{
	21: "int2", 23: "int4", 20: "int8", 1700: "numeric",
	25: "text", 1043: "varchar", 1042: "bpchar", 2950: "uuid",
}

// collated key types are compared with COLLATE "C": bytewise, as consumers
// compare them.
func collated(oid uint32) bool { return oid == 25 || oid == 1043 || oid == 1042 }

// ensureSignalTable creates the watermark table if it is missing.
func ensureSignalTable(ctx context.Context, conn *pgx.Conn, qualified string) (tableInfo, error) {
	schema, name, ok := strings.Cut(qualified, ".")
	if !ok {
		return tableInfo{}, fmt.Errorf("backfill.signal_table: %q is not schema.table", qualified)
	}
	t := tableInfo{schema: schema, name: name, key: []string{"source"}, identity: 'd'}
	sql := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s (source text PRIMARY KEY, kind text NOT NULL, id text NOT NULL, at timestamptz NOT NULL DEFAULT now())`,
		pgx.Identifier{schema, name}.Sanitize())
	var exists bool
	err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", pgx.Identifier{schema, name}.Sanitize()).Scan(&exists)
	if err != nil {
		return t, fmt.Errorf("look up the signal table %s: %w", qualified, err)
	}
	if exists {
		return t, nil
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return t, fmt.Errorf("create the backfill signal table %s: %w (create it as its owner instead: %s; then GRANT INSERT, UPDATE ON it to sluice's user)", qualified, err, sql)
	}
	return t, nil
}

// Tables lists the captured tables, without the signal table.
func (s *Source) Tables() []string {
	s.tablesMu.RLock()
	defer s.tablesMu.RUnlock()
	names := make([]string, 0, len(s.tables))
	for qn := range s.tables {
		if qn != s.signal.qualified() {
			names = append(names, qn)
		}
	}
	return names
}

// ReadSignal decodes a change of the signal table.
func (s *Source) ReadSignal(c *sources.Change) (sources.Signal, bool) {
	if c.Table == nil || c.Table.Schema != s.signal.schema || c.Table.Name != s.signal.name {
		return sources.Signal{}, false
	}
	return sources.SignalRow(c), true
}

// backfillConnLocked returns the backfill connection, opening it when
// needed. s.backfillMu must be held.
func (s *Source) backfillConnLocked(ctx context.Context) (*pgx.Conn, error) {
	if s.backfillConn != nil && !s.backfillConn.IsClosed() {
		return s.backfillConn, nil
	}
	login, err := s.login(ctx)
	if err != nil {
		return nil, err
	}
	conn, err := connect(ctx, s.cfg, false, login)
	if err != nil {
		return nil, err
	}
	s.backfillConn = conn
	return conn, nil
}

// dropBackfillConnLocked forgets a connection that failed, so the next call
// reconnects (with fresh credentials, if they expired).
func (s *Source) dropBackfillConnLocked(err error) error {
	err = classify(err)
	if errors.Is(err, sources.ErrDisconnected) && s.backfillConn != nil {
		s.backfillConn.Close(context.Background())
		s.backfillConn = nil
	}
	return err
}

// WriteSignal upserts this source's watermark row and commits it.
func (s *Source) WriteSignal(ctx context.Context, kind, id string) (err error) {
	defer func() { err = valueFree(err) }()
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return err
	}
	sql := fmt.Sprintf(`INSERT INTO %s (source, kind, id, at) VALUES ($1, $2, $3, now())
		ON CONFLICT (source) DO UPDATE SET kind = EXCLUDED.kind, id = EXCLUDED.id, at = EXCLUDED.at`,
		pgx.Identifier{s.signal.schema, s.signal.name}.Sanitize())
	// The commit flushes the WAL at once whatever synchronous_commit says:
	// the walsender sends only flushed WAL, so a watermark left to the WAL
	// writer would reach the stream up to wal_writer_delay later.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue("SET LOCAL synchronous_commit = on")
	b.Queue(sql, s.cfg.Name, kind, id)
	b.Queue("COMMIT")
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return s.dropBackfillConnLocked(fmt.Errorf("write the %s watermark to %s: %w", kind, s.signal.qualified(), err))
	}
	return nil
}

// EstimateRows reads the planner's row count, or counts when the table was
// never analyzed.
func (s *Source) EstimateRows(ctx context.Context, table string) (_ int64, err error) {
	defer func() { err = valueFree(err) }()
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return 0, err
	}
	info, err := s.userTable(table)
	if err != nil {
		return 0, err
	}
	ident := pgx.Identifier{info.schema, info.name}.Sanitize()
	var n int64
	if err := conn.QueryRow(ctx, "SELECT reltuples::bigint FROM pg_class WHERE oid = $1::regclass", ident).Scan(&n); err != nil {
		return 0, s.dropBackfillConnLocked(fmt.Errorf("estimate the rows of %s: %w", table, err))
	}
	if n < 0 {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+ident).Scan(&n); err != nil {
			return 0, s.dropBackfillConnLocked(fmt.Errorf("count the rows of %s: %w", table, err))
		}
	}
	return n, nil
}

// ReadChunk selects one chunk of a table in key order. Text keys are read
// in COLLATE "C" order, which consumers reproduce by comparing bytes; an
// index on a column of another collation cannot serve that order, so such
// tables sort the rest of the table for each chunk, unless an index of the
// key columns in collation "C" exists (sluice check and the job's start
// name it: readChunkAdvice).
//
// Filters are checked against the table's columns and become conditions
// made of the column's quoted name and placeholders only; their values are
// parameters of unknown type, in text form, which the server converts to
// the column's type. With q.Timeout, the server cancels the SELECT when it
// runs longer (statement_timeout, local to the chunk's read-only
// transaction).
func (s *Source) ReadChunk(ctx context.Context, q sources.ChunkQuery) (_ sources.Chunk, err error) {
	defer func() { err = valueFree(err) }()
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	info, err := s.userTable(q.Table)
	if err != nil {
		return sources.Chunk{}, err
	}
	if q.Limit <= 0 {
		return sources.Chunk{}, fmt.Errorf("read a chunk of %s: limit %d, want at least 1", q.Table, q.Limit)
	}
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return sources.Chunk{}, err
	}
	sql, params, err := s.chunkSQLLocked(ctx, conn, info, q)
	if err != nil {
		return sources.Chunk{}, err
	}

	// One snapshot for the chunk and for the list of transactions it sees
	// as running (see sources.Chunk.Invisible).
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: %w", q.Table, err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	xipRows, err := tx.Query(ctx, "SELECT x::text::bigint FROM pg_snapshot_xip(pg_current_snapshot()) x")
	if err != nil {
		return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: %w", q.Table, err))
	}
	xip, err := pgx.CollectRows(xipRows, pgx.RowTo[int64])
	if err != nil {
		return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: %w", q.Table, err))
	}
	invisible := make([]uint64, len(xip))
	for i, x := range xip {
		invisible[i] = uint64(uint32(x)) // xid8 → the 32-bit xid pgoutput sends
	}
	if q.Timeout > 0 {
		// Local to the transaction: it ends with the chunk.
		if _, err := tx.Exec(ctx, "SELECT set_config('statement_timeout', $1, true)", timeoutMillis(q.Timeout)); err != nil {
			return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: set backfill.statement_timeout: %w", q.Table, err))
		}
	}
	// No parameter types: the server infers each from its use, so a
	// filter's value takes its column's type.
	rr := conn.PgConn().ExecParams(ctx, sql, params, nil, nil, nil)
	fields := rr.FieldDescriptions()
	shape := &sources.Table{Schema: info.schema, Name: info.name}
	lookup := s.typeLookup(ctx, conn)
	// The result is read to the end before decoders may query the catalog
	// on the same connection.
	var raw [][][]byte
	for rr.NextRow() {
		vals := rr.Values()
		row := make([][]byte, len(vals))
		for i, v := range vals {
			if v != nil {
				row[i] = append([]byte{}, v...)
			}
		}
		raw = append(raw, row)
	}
	if _, err := rr.Close(); err != nil {
		var pgErr *pgconn.PgError
		if q.Timeout > 0 && ctx.Err() == nil && errors.As(err, &pgErr) && pgErr.Code == "57014" {
			return sources.Chunk{}, fmt.Errorf("read a chunk of %s: %w (%s): read smaller chunks (backfill.chunk_size), index the filtered columns, or raise the timeout: %w",
				q.Table, sources.ErrStatementTimeout, q.Timeout, err)
		}
		return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: %w", q.Table, err))
	}
	if err := tx.Commit(ctx); err != nil {
		return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: %w", q.Table, err))
	}
	decoders := make([]valueDecoder, len(fields))
	for i, f := range fields {
		dec, err := newDecoder(f.DataTypeOID, lookup)
		if err != nil {
			return sources.Chunk{}, fmt.Errorf("table %s column %s: %w", q.Table, f.Name, err)
		}
		decoders[i] = dec
		shape.Columns = append(shape.Columns, f.Name)
		typ := s.typeName(f.DataTypeOID, lookup)
		shape.Types = append(shape.Types, typ)
		shape.Kinds = append(shape.Kinds, valueKind(typ))
	}
	var oid uint32
	if err := conn.QueryRow(ctx, "SELECT $1::regclass::oid", pgx.Identifier{info.schema, info.name}.Sanitize()).Scan(&oid); err != nil {
		return sources.Chunk{}, s.dropBackfillConnLocked(fmt.Errorf("read a chunk of %s: %w", q.Table, err))
	}
	shape.NotNull = notNull(ctx, conn, oid, shape.Columns)
	table, err := s.register(shape, info.key)
	if err != nil {
		return sources.Chunk{}, err
	}
	rows := make([][]sources.Value, len(raw))
	for r, row := range raw {
		vals := make([]sources.Value, len(row))
		var buf []byte
		ends := make([]int, len(row))
		for i, v := range row {
			if v == nil {
				buf = append(buf, "null"...)
			} else if buf, err = decoders[i](buf, v); err != nil {
				return sources.Chunk{}, fmt.Errorf("table %s column %s: %w", q.Table, shape.Columns[i], err)
			}
			ends[i] = len(buf)
		}
		start := 0
		for i, end := range ends {
			vals[i] = buf[start:end:end]
			start = end
		}
		rows[r] = vals
	}
	return sources.Chunk{Table: table, Rows: rows, Invisible: invisible}, nil
}

// chunkSQLLocked is the SELECT of q's chunk and its parameters: the
// key's columns, text ones COLLATE "C", compared as a row with the
// cursor's values and ordered by, the filters' conditions and the limit.
// s.backfillMu must be held.
func (s *Source) chunkSQLLocked(ctx context.Context, conn *pgx.Conn, info tableInfo, q sources.ChunkQuery) (string, [][]byte, error) {
	types, err := s.keyTypesLocked(ctx, conn, info)
	if err != nil {
		return "", nil, s.dropBackfillConnLocked(err)
	}
	cols := make([]string, len(info.key))
	for i, k := range info.key {
		cols[i] = pgx.Identifier{k}.Sanitize()
		if collated(types[i]) {
			cols[i] += ` COLLATE "C"`
		}
	}
	var params [][]byte
	var ph []string
	if q.From != nil {
		if len(q.From) != len(info.key) {
			return "", nil, fmt.Errorf("chunk cursor of %s has %d values, its key %d columns", q.Table, len(q.From), len(info.key))
		}
		for i, v := range q.From {
			p, err := paramText(v)
			if err != nil {
				return "", nil, fmt.Errorf("chunk cursor of %s: %w", q.Table, err)
			}
			params = append(params, p)
			ph = append(ph, "$"+strconv.Itoa(i+1)+"::"+chunkKeyTypes[types[i]])
		}
	}
	conds, fparams, err := s.filterCondsLocked(ctx, conn, info, q.Filters, len(params))
	if err != nil {
		return "", nil, err
	}
	params = append(params, fparams...)
	return sources.ChunkSQL("SELECT * FROM "+pgx.Identifier{info.schema, info.name}.Sanitize(), cols, ph, conds, q.Limit), params, nil
}

// userTable returns a captured table other than the signal table.
func (s *Source) userTable(table string) (tableInfo, error) {
	info, ok := s.captured(table)
	if !ok || table == s.signal.qualified() {
		names := s.Tables()
		slices.Sort(names)
		return tableInfo{}, fmt.Errorf("table %s is not captured by this source (source.tables): backfill one of %s", table, strings.Join(names, ", "))
	}
	return info, nil
}

// Columns lists a captured table's columns as the catalog has them now, in
// the order of its rows.
func (s *Source) Columns(ctx context.Context, table string) (_ []string, err error) {
	defer func() { err = valueFree(err) }()
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	info, err := s.userTable(table)
	if err != nil {
		return nil, err
	}
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return nil, err
	}
	cols, err := s.columnsLocked(ctx, conn, info, true)
	if err != nil {
		return nil, err
	}
	return slices.Clone(cols), nil
}

// columnsLocked returns a table's column names, from the cache unless
// fresh is set.
func (s *Source) columnsLocked(ctx context.Context, conn *pgx.Conn, info tableInfo, fresh bool) ([]string, error) {
	if cols, ok := s.columns[info.qualified()]; ok && !fresh {
		return cols, nil
	}
	cols, err := tableColumns(ctx, conn, info)
	if err != nil {
		return nil, s.dropBackfillConnLocked(err)
	}
	if len(cols) == 0 {
		return nil, fmt.Errorf("table %s has no columns", info.qualified())
	}
	s.columns[info.qualified()] = cols
	return cols, nil
}

// tableColumns reads a table's column names in order.
func tableColumns(ctx context.Context, conn *pgx.Conn, info tableInfo) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT attname::text FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum`,
		pgx.Identifier{info.schema, info.name}.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", info.qualified(), err)
	}
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read the columns of %s: %w", info.qualified(), err)
	}
	return cols, nil
}

// compareOps are the SQL operators of the comparing filter operators.
var compareOps = map[string]string{
	sources.OpEq: "=", sources.OpNe: "<>", sources.OpLt: "<", sources.OpLe: "<=", sources.OpGt: ">", sources.OpGe: ">=",
}

// filterCondsLocked checks filters against the table's columns and builds
// their conditions: the column's name as the catalog has it, quoted, an
// operator of sluice's own and placeholders numbered after the n
// parameters before them. The filters' values are the parameters, as text.
// Nothing of a filter's text becomes SQL.
func (s *Source) filterCondsLocked(ctx context.Context, conn *pgx.Conn, info tableInfo, filters []sources.Filter, n int) ([]string, [][]byte, error) {
	if len(filters) == 0 {
		return nil, nil, nil
	}
	columns, err := s.columnsLocked(ctx, conn, info, false)
	if err != nil {
		return nil, nil, err
	}
	if sources.ValidateFilters(info.qualified(), columns, filters) != nil {
		// The cached columns may be older than an ALTER TABLE: look again.
		if columns, err = s.columnsLocked(ctx, conn, info, true); err != nil {
			return nil, nil, err
		}
		if err := sources.ValidateFilters(info.qualified(), columns, filters); err != nil {
			return nil, nil, err
		}
	}
	var conds []string
	var params [][]byte
	placeholder := func(v string) string {
		params = append(params, []byte(v))
		return "$" + strconv.Itoa(n+len(params))
	}
	for _, f := range filters {
		i := slices.Index(columns, f.Column)
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: table %s has no column %q", sources.ErrBadFilter, info.qualified(), f.Column)
		}
		col := pgx.Identifier{columns[i]}.Sanitize()
		switch f.Op {
		case sources.OpIsNull:
			conds = append(conds, col+" IS NULL")
		case sources.OpIsNotNull:
			conds = append(conds, col+" IS NOT NULL")
		case sources.OpIn:
			ph := make([]string, len(f.Values))
			for j, v := range f.Values {
				ph[j] = placeholder(v)
			}
			conds = append(conds, col+" IN ("+strings.Join(ph, ", ")+")")
		default:
			op, ok := compareOps[f.Op]
			if !ok || len(f.Values) != 1 {
				return nil, nil, fmt.Errorf("%w: operator %q of column %s", sources.ErrBadFilter, f.Op, columns[i])
			}
			conds = append(conds, col+" "+op+" "+placeholder(f.Values[0]))
		}
	}
	return conds, params, nil
}

// timeoutMillis is statement_timeout's value for d: whole milliseconds,
// rounded up (0 would mean no timeout), at most what the setting takes.
func timeoutMillis(d time.Duration) string {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return strconv.FormatInt(min(max(int64(ms), 1), math.MaxInt32), 10)
}

// keyTypesLocked returns the type oids of a table's key columns, checking
// that chunks can be ordered by them.
func (s *Source) keyTypesLocked(ctx context.Context, conn *pgx.Conn, info tableInfo) ([]uint32, error) {
	if t, ok := s.keyTypes[info.qualified()]; ok {
		return t, nil
	}
	types := make([]uint32, len(info.key))
	for i, k := range info.key {
		var oid, base uint32
		var name string
		err := conn.QueryRow(ctx, `SELECT a.atttypid, t.typbasetype, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
			WHERE a.attrelid = $1::regclass AND a.attname = $2 AND NOT a.attisdropped`,
			pgx.Identifier{info.schema, info.name}.Sanitize(), k).Scan(&oid, &base, &name)
		if err != nil {
			return nil, fmt.Errorf("read the key type of %s.%s: %w", info.qualified(), k, err)
		}
		if base != 0 {
			oid = base // a domain orders as its base type
		}
		if _, ok := chunkKeyTypes[oid]; !ok {
			return nil, fmt.Errorf("%w: table %s key column %s is %s; backfill reads chunks by keys of type smallint, integer, bigint, numeric, text, varchar, char or uuid (capture goes on; backfill another table, or key this one by a supported column)",
				sources.ErrUnsupportedKey, info.qualified(), k, name)
		}
		types[i] = oid
	}
	s.keyTypes[info.qualified()] = types
	return types, nil
}

// paramText turns a key value in its event JSON form into the text form of
// a query parameter.
func paramText(v sources.Value) ([]byte, error) {
	if len(v) > 0 && v[0] == '"' {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	}
	if string(v) == "null" {
		return nil, errors.New("a key value is null")
	}
	return v, nil
}

// Reset gives up a lost position: it recreates the slot when it is gone or
// invalidated and returns the position streaming resumes from, now.
func (s *Source) Reset(ctx context.Context) (sources.Position, error) {
	st, err := readSlot(ctx, s.conn, s.cfg.Slot)
	if err != nil {
		return "", classify(err)
	}
	if st.exists && st.walStatus == "lost" {
		s.cfg.Log.Warn("dropping the invalidated replication slot to create it anew", "slot", s.cfg.Slot)
		if _, err := s.conn.Exec(ctx, "SELECT pg_drop_replication_slot($1)", s.cfg.Slot); err != nil {
			return "", classify(fmt.Errorf("drop invalidated replication slot %s: %w", s.cfg.Slot, err))
		}
		st.exists = false
	}
	if !st.exists {
		var lsn string
		if err := s.conn.QueryRow(ctx, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", s.cfg.Slot).Scan(&lsn); err != nil {
			return "", classify(fmt.Errorf("create replication slot %s: %w (the user needs the REPLICATION attribute, and max_replication_slots must have room)", s.cfg.Slot, err))
		}
		return sources.Position(lsn), nil
	}
	return sources.Position(st.confirmedFlush.String()), nil
}
