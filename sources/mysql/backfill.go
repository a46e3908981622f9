package mysql

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

var _ sources.Backfiller = (*Source)(nil)

// tableName is a table as db and name.
type tableName struct{ db, name string }

func (t tableName) String() string { return t.db + "." + t.name }

// sql is the quoted name, for statements.
func (t tableName) sql() string { return ident(t.db) + "." + ident(t.name) }

func ident(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// signalName resolves source.signal_table. Without a DSN database the
// default follows the first captured table, so a config that lists tables
// across databases still needs nothing more.
func signalName(configured, dsnDB string, tables []*tableSchema) (tableName, error) {
	if configured != "" {
		db, name, ok := strings.Cut(configured, ".")
		if !ok || db == "" || name == "" {
			return tableName{}, fmt.Errorf("source.signal_table %q is not db.table", configured)
		}
		return tableName{db, name}, nil
	}
	db := dsnDB
	if db == "" && len(tables) > 0 {
		db = tables[0].db
	}
	if db == "" {
		return tableName{}, errors.New("source.signal_table is empty and source.dsn names no database: set source.signal_table to db.table")
	}
	return tableName{db, "sluice_signal"}, nil
}

func signalDDL(t tableName) string {
	return "CREATE TABLE IF NOT EXISTS " + t.sql() + " (source VARCHAR(255) NOT NULL PRIMARY KEY, kind VARCHAR(16) NOT NULL, " +
		"id VARCHAR(255) NOT NULL, at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))"
}

// ensureSignalTable creates the signal table when it is missing. An
// existing one is only read, so a user allowed to write it but not to
// create tables is enough once an administrator has created it.
func ensureSignalTable(conn *client.Conn, t tableName, user string) (*tableSchema, error) {
	ts, err := loadTable(conn, t.db, t.name)
	if err != nil {
		return nil, err
	}
	if ts == nil {
		ddl := signalDDL(t)
		if _, err := conn.Execute(ddl); err != nil {
			var myErr *mysql.MyError
			if errors.As(err, &myErr) {
				switch myErr.Code {
				case mysql.ER_DBACCESS_DENIED_ERROR, mysql.ER_TABLEACCESS_DENIED_ERROR, mysql.ER_SPECIFIC_ACCESS_DENIED_ERROR:
					return nil, fmt.Errorf("%w: user %q may not create the backfill signal table %s (%s); have an administrator run:\n  %s;\n  GRANT INSERT, UPDATE ON %s TO '%s'@'%%';\nor set source.signal_table to a table this user may create",
						sources.ErrPrerequisite, user, t, myErr.Message, ddl, t.sql(), user)
				case mysql.ER_BAD_DB_ERROR:
					return nil, fmt.Errorf("%w: database %q of the backfill signal table %s does not exist: create it, or set source.signal_table to db.table in an existing database",
						sources.ErrPrerequisite, t.db, t)
				}
			}
			return nil, fmt.Errorf("create the backfill signal table %s (%s): %w", t, ddl, err)
		}
		if ts, err = loadTable(conn, t.db, t.name); err != nil {
			return nil, err
		}
		if ts == nil {
			return nil, fmt.Errorf("the backfill signal table %s is missing right after CREATE TABLE", t)
		}
	}
	names := make([]string, len(ts.columns))
	for i, c := range ts.columns {
		names[i] = c.name
	}
	for _, want := range []string{"source", "kind", "id"} {
		if !slices.Contains(names, want) {
			return nil, fmt.Errorf("%w: table %s is not a sluice signal table (no column %s): drop it so sluice recreates it, or set source.signal_table to another name (the expected shape: %s)",
				sources.ErrPrerequisite, t, want, signalDDL(t))
		}
	}
	if !slices.Equal(ts.key, []string{"source"}) {
		return nil, fmt.Errorf("%w: the signal table %s must have the primary key (source), not (%s): drop it so sluice recreates it (%s)",
			sources.ErrPrerequisite, t, strings.Join(ts.key, ", "), signalDDL(t))
	}
	return ts, nil
}

// backfillConn is the backfill's own connection: its statements must not
// wait behind the binlog reader's catalog queries, nor interleave with them
// on one wire.
type backfillConn struct {
	mu       sync.Mutex
	conn     *client.Conn
	host     hostPort        // conn's server
	expiring <-chan struct{} // the login's, nil if it does not expire
}

// drop forgets the connection; the next use connects again. b.mu is held.
func (b *backfillConn) drop() {
	if b.conn != nil {
		b.conn.Close()
		b.conn, b.expiring = nil, nil
	}
}

func (b *backfillConn) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.drop()
}

// backfillDSN is the DSN to connect the backfill with now, at the server
// Stream reads from: watermarks must land in the binlog it reads. It never
// touches s.dsn's user, password or server: Stream rewrites them from
// another goroutine; the host list, database and TLS settings are fixed
// since New.
func (s *Source) backfillDSN(ctx context.Context) (dsn, *sources.Login, error) {
	base := dsn{hosts: s.dsn.hosts, db: s.dsn.db, mode: s.dsn.mode, tlsSettings: s.dsn.tlsSettings}
	d, err := base.at(s.currentHost())
	if err != nil {
		return d, nil, err
	}
	if s.cfg.Credentials == nil {
		d.user, d.password = s.dsn.user, s.dsn.password
		return d, nil, nil
	}
	l, err := s.cfg.Credentials.Login(ctx)
	if err != nil {
		return d, nil, err
	}
	d.user, d.password = l.User, l.Password
	return d, &l, nil
}

// backfillSession makes what the server sends comparable with the binlog:
// TIMESTAMPs in UTC as the binlog reader prints them, and strings in their
// column's own character set (no conversion), as the binlog carries them.
const backfillSession = "SET SESSION time_zone = '+00:00', character_set_results = NULL, autocommit = 1"

// withBackfill runs fn on the backfill connection, connecting first when
// there is none or its login is expiring. A connection that failed, or was
// cut because ctx ended, is dropped.
//
// Its errors quote no server message (valueFree): those may carry values.
func (s *Source) withBackfill(ctx context.Context, fn func(*client.Conn) error) (err error) {
	defer func() { err = valueFree(err) }()
	b := &s.bf
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.conn != nil && b.expiring != nil {
		select {
		case <-b.expiring:
			b.drop()
		default:
		}
	}
	if b.conn != nil && b.host != s.currentHost() {
		b.drop() // Stream moved to another server: a failover
	}
	if b.conn == nil {
		d, login, err := s.backfillDSN(ctx)
		if err != nil {
			return err
		}
		conn, err := connectWritable(ctx, d)
		if err != nil {
			return sources.RetryRejected(s.cfg.Credentials, login, err)
		}
		if _, err := conn.Execute(backfillSession); err != nil {
			conn.Close()
			return classify(fmt.Errorf("set up the backfill connection: %w", err))
		}
		b.conn, b.host = conn, hostPort{host: d.host, port: d.port}
		if login != nil {
			b.expiring = login.Expiring
		}
	}
	// go-mysql takes no context past the dial: closing the socket is what
	// ends a statement that ctx no longer wants.
	raw := b.conn.Conn.Conn
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	err = fn(b.conn)
	if !stop() {
		// The socket is closed; what fn finished before that still stands.
		b.drop()
		if err != nil {
			return ctx.Err()
		}
		return nil
	}
	if err != nil {
		err = classify(err)
		if errors.Is(err, sources.ErrDisconnected) {
			b.drop()
		}
	}
	return err
}

// Tables lists the captured tables as db.table; the signal table is
// sluice's own and not among them.
func (s *Source) Tables() []string {
	s.tablesMu.RLock()
	defer s.tablesMu.RUnlock()
	names := make([]string, 0, len(s.tables))
	for n := range s.tables {
		if n != s.signal.String() {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// userTable checks that name is a captured table, not the signal table.
func (s *Source) userTable(name string) (tableName, error) {
	db, t, ok := strings.Cut(name, ".")
	s.tablesMu.RLock()
	_, captured := s.tables[name]
	s.tablesMu.RUnlock()
	if !ok || !captured || name == s.signal.String() {
		return tableName{}, fmt.Errorf("table %q is not captured by source %s: backfill one of %s", name, s.cfg.Name, strings.Join(s.Tables(), ", "))
	}
	return tableName{db, t}, nil
}

// WriteSignal writes a watermark row and commits it (autocommit), so the
// binlog has it after everything committed before.
func (s *Source) WriteSignal(ctx context.Context, kind, id string) error {
	q := "INSERT INTO " + s.signal.sql() + " (source, kind, id, at) VALUES (?, ?, ?, NOW(6)) " +
		"ON DUPLICATE KEY UPDATE kind = VALUES(kind), id = VALUES(id), at = VALUES(at)"
	return s.withBackfill(ctx, func(conn *client.Conn) error {
		r, err := conn.Execute(q, s.cfg.Name, kind, id)
		if err == nil {
			r.Close()
			return nil
		}
		var myErr *mysql.MyError
		if errors.As(err, &myErr) && (myErr.Code == mysql.ER_TABLEACCESS_DENIED_ERROR || myErr.Code == mysql.ER_COLUMNACCESS_DENIED_ERROR) {
			return fmt.Errorf("%w: write the backfill watermark to %s: %w: GRANT INSERT, UPDATE ON %s TO the sluice user",
				sources.ErrPrerequisite, s.signal, err, s.signal.sql())
		}
		return fmt.Errorf("write the backfill watermark to %s: %w", s.signal, err)
	})
}

// ReadSignal tells whether c is a change of the signal table and decodes
// its row; a row it cannot read (a delete, a foreign shape) gives an empty
// Signal.
func (s *Source) ReadSignal(c *sources.Change) (sources.Signal, bool) {
	if c == nil || c.Table == nil || c.Table.Schema != s.signal.db || c.Table.Name != s.signal.name {
		return sources.Signal{}, false
	}
	sig := sources.SignalRow(c)
	if sig.Source == "" || sig.Kind == "" || sig.ID == "" {
		return sources.Signal{}, true
	}
	return sig, true
}

// Reset returns where the binlog ends now, in Stream's position form
// ("gtid:<set>" or "file:<name>:<offset>", as the source keeps positions),
// for resuming after the checkpoint's binlog was purged.
func (s *Source) Reset(ctx context.Context) (sources.Position, error) {
	var pos position
	err := s.withBackfill(ctx, func(conn *client.Conn) error {
		var err error
		pos, err = currentPosition(conn, s.info)
		return err
	})
	if err != nil {
		return "", err
	}
	return sources.Position(pos.String()), nil
}

// existingTable loads a captured table's shape as the server has it now;
// a table dropped since sluice started is an error naming the fix.
func existingTable(conn *client.Conn, tn tableName) (*tableSchema, error) {
	t, err := loadTable(conn, tn.db, tn.name)
	if err == nil && t == nil {
		err = fmt.Errorf("table %s does not exist (any more): remove it from source.tables", tn)
	}
	return t, err
}

// Columns lists a captured table's columns as information_schema has
// them now, in the order of its rows.
func (s *Source) Columns(ctx context.Context, table string) ([]string, error) {
	tn, err := s.userTable(table)
	if err != nil {
		return nil, err
	}
	var names []string
	err = s.withBackfill(ctx, func(conn *client.Conn) error {
		t, err := existingTable(conn, tn)
		if err != nil {
			return err
		}
		for _, c := range t.columns {
			names = append(names, c.name)
		}
		return nil
	})
	return names, err
}

// EstimateRows returns InnoDB's estimate, or the exact count when there is
// none (a table never analysed, or another engine).
func (s *Source) EstimateRows(ctx context.Context, table string) (int64, error) {
	t, err := s.userTable(table)
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.withBackfill(ctx, func(conn *client.Conn) error {
		r, err := conn.Execute("SELECT IFNULL(TABLE_ROWS, 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?", t.db, t.name)
		if err != nil {
			return fmt.Errorf("estimate the rows of %s: %w", t, err)
		}
		defer r.Close()
		if r.RowNumber() == 0 {
			return fmt.Errorf("table %s does not exist (any more): remove it from source.tables", t)
		}
		if n, err = r.GetInt(0, 0); err != nil {
			return fmt.Errorf("estimate the rows of %s: %w", t, err)
		}
		if n > 0 {
			return nil
		}
		c, err := conn.Execute("SELECT COUNT(*) FROM " + t.sql())
		if err != nil {
			return fmt.Errorf("count the rows of %s: %w", t, err)
		}
		defer c.Close()
		n, err = c.GetInt(0, 0)
		return err
	})
	return n, err
}

// ReadChunk reads up to q.Limit rows of a captured table from key q.From
// on, in the key order of DESIGN.md: integers and decimals numerically,
// text bytewise in UTF-8, binary strings bytewise. Values are written
// exactly as the binlog reader writes the same row.
//
// Filters are checked against the table's columns and become conditions
// made of the column's quoted name and placeholders only; their values are
// bound (see filterParam). The SELECT runs in a read-only transaction and,
// with q.Timeout, under a server-side limit: MariaDB's max_statement_time,
// MySQL's MAX_EXECUTION_TIME.
func (s *Source) ReadChunk(ctx context.Context, q sources.ChunkQuery) (sources.Chunk, error) {
	tn, err := s.userTable(q.Table)
	if err != nil {
		return sources.Chunk{}, err
	}
	if q.Limit <= 0 {
		return sources.Chunk{}, fmt.Errorf("read a chunk of %s: limit %d, want at least 1", tn, q.Limit)
	}
	var chunk sources.Chunk
	err = s.withBackfill(ctx, func(conn *client.Conn) error {
		// The shape now, not the stream's: the stream may lag behind an
		// ALTER TABLE that this SELECT already sees.
		t, err := existingTable(conn, tn)
		if err != nil {
			return err
		}
		if err := markJSON(conn, t); err != nil {
			return err
		}
		t.preferConfigured(s.cfg.Keys[q.Table])
		if len(t.key) == 0 {
			return fmt.Errorf("%w: %s: add one or a unique index over NOT NULL columns, or list its key columns under source.keys", sources.ErrNoPrimaryKey, tn)
		}
		sql, args, err := chunkSQL(t, q, s.info.flavor)
		if err != nil {
			return err
		}
		// A prepared statement, even without arguments: the binary protocol
		// carries FLOAT and DOUBLE exactly, where text rounds FLOAT.
		stmt, err := conn.Prepare(sql)
		if err != nil {
			return fmt.Errorf("read a chunk of %s: %w", tn, err)
		}
		if err := execute(conn, "START TRANSACTION READ ONLY"); err != nil {
			stmt.Close()
			return fmt.Errorf("read a chunk of %s: %w", tn, err)
		}
		r, err := stmt.Execute(args...)
		stmt.Close()
		if err != nil {
			_ = execute(conn, "ROLLBACK") // a broken connection is dropped anyway
			var myErr *mysql.MyError
			if q.Timeout > 0 && errors.As(err, &myErr) && (myErr.Code == erQueryTimeout || myErr.Code == erStatementTimeout) {
				return fmt.Errorf("read a chunk of %s: %w (%s): read smaller chunks (backfill.chunk_size), index the filtered columns, or raise the timeout: %w",
					tn, sources.ErrStatementTimeout, q.Timeout, err)
			}
			return fmt.Errorf("read a chunk of %s: %w", tn, err)
		}
		defer r.Close()
		if err := execute(conn, "COMMIT"); err != nil {
			return fmt.Errorf("read a chunk of %s: %w", tn, err)
		}
		codecs := make([]chunkCol, len(t.columns))
		for i, c := range t.columns {
			codecs[i] = chunkCodec(c)
		}
		if r.Resultset == nil || len(r.Fields) != len(codecs) {
			return fmt.Errorf("read a chunk of %s: the result does not have the table's %d columns", tn, len(codecs))
		}
		chunk.Rows = make([][]sources.Value, len(r.Values))
		for i := range r.Values {
			if chunk.Rows[i], err = decodeChunkRow(codecs, r.Values[i]); err != nil {
				return fmt.Errorf("read a chunk of %s: %w", tn, err)
			}
		}
		chunk.Table = s.shape(t, nil)
		return nil
	})
	if err != nil {
		return sources.Chunk{}, err
	}
	return chunk, nil
}

// execute runs a statement that returns no rows.
func execute(conn *client.Conn, sql string) error {
	r, err := conn.Execute(sql)
	if err != nil {
		return err
	}
	r.Close()
	return nil
}

// chunkSQL builds the chunk's SELECT and its arguments: the key columns'
// start values, then the filters'. flavor decides how q.Timeout is said.
func chunkSQL(t *tableSchema, q sources.ChunkQuery, flavor string) (string, []any, error) {
	if q.From != nil && len(q.From) != len(t.key) {
		return "", nil, fmt.Errorf("read a chunk of %s: the chunk starts at %d key values, the key (%s) has %d",
			t.qualified(), len(q.From), strings.Join(t.key, ", "), len(t.key))
	}
	exprs := make([]string, len(t.key))
	params := make([]string, len(t.key))
	var args []any
	for i, k := range t.key {
		j := slices.IndexFunc(t.columns, func(c column) bool { return c.name == k })
		if j < 0 {
			return "", nil, fmt.Errorf("read a chunk of %s: key column %s is not in the table (source.keys?)", t.qualified(), k)
		}
		kc, err := keyOrder(t, t.columns[j])
		if err != nil {
			return "", nil, err
		}
		exprs[i], params[i] = kc.expr, kc.param
		if q.From != nil {
			a, err := kc.arg(q.From[i])
			if err != nil {
				return "", nil, fmt.Errorf("read a chunk of %s: start value %s of key column %s: %w", t.qualified(), q.From[i], k, err)
			}
			args = append(args, a)
		}
	}
	conds, fargs, err := filterConds(t, q.Filters)
	if err != nil {
		return "", nil, err
	}
	if q.From == nil {
		params = nil
	}
	var b strings.Builder
	switch {
	case q.Timeout <= 0:
		b.WriteString("SELECT ")
	case flavor == mysql.MariaDBFlavor:
		b.WriteString("SET STATEMENT max_statement_time=" + maxStatementTime(q.Timeout) + " FOR SELECT ")
	default:
		// MySQL 5.7.8 and later; an older server reads a comment.
		b.WriteString("SELECT /*+ MAX_EXECUTION_TIME(" + maxExecutionTime(q.Timeout) + ") */ ")
	}
	for i, c := range t.columns {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(ident(c.name))
	}
	b.WriteString(" FROM " + tableName{t.db, t.name}.sql())
	return sources.ChunkSQL(b.String(), exprs, params, conds, q.Limit), append(args, fargs...), nil
}

// maxStatementTime is MariaDB's max_statement_time for d: seconds with
// microseconds, at least one (0 would mean no limit), at most a year.
func maxStatementTime(d time.Duration) string {
	d = min(max(d, time.Microsecond), 365*24*time.Hour)
	return strconv.FormatFloat(d.Seconds(), 'f', 6, 64)
}

// maxExecutionTime is MySQL's MAX_EXECUTION_TIME for d: whole
// milliseconds, rounded up (0 would mean no limit), at most 2^32-1.
func maxExecutionTime(d time.Duration) string {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return strconv.FormatInt(min(max(int64(ms), 1), math.MaxUint32), 10)
}

// compareOps are the SQL operators of the comparing filter operators.
var compareOps = map[string]string{
	sources.OpEq: "=", sources.OpNe: "<>", sources.OpLt: "<", sources.OpLe: "<=", sources.OpGt: ">", sources.OpGe: ">=",
}

// filterConds checks filters against the table's columns and builds their
// conditions: the column's name as information_schema has it, quoted, an
// operator of sluice's own and placeholders. The filters' values are the
// arguments. Nothing of a filter's text becomes SQL.
func filterConds(t *tableSchema, filters []sources.Filter) ([]string, []any, error) {
	if len(filters) == 0 {
		return nil, nil, nil
	}
	names := make([]string, len(t.columns))
	for i, c := range t.columns {
		names[i] = c.name
	}
	if err := sources.ValidateFilters(t.qualified(), names, filters); err != nil {
		return nil, nil, err
	}
	var conds []string
	var args []any
	for _, f := range filters {
		i := slices.Index(names, f.Column)
		if i < 0 {
			return nil, nil, fmt.Errorf("%w: table %s has no column %q", sources.ErrBadFilter, t.qualified(), f.Column)
		}
		c := t.columns[i]
		col := ident(c.name)
		switch f.Op {
		case sources.OpIsNull:
			conds = append(conds, col+" IS NULL")
			continue
		case sources.OpIsNotNull:
			conds = append(conds, col+" IS NOT NULL")
			continue
		}
		ph := make([]string, len(f.Values))
		for j, v := range f.Values {
			p, a, err := filterParam(t, c, v)
			if err != nil {
				return nil, nil, err
			}
			ph[j] = p
			args = append(args, a)
		}
		if f.Op == sources.OpIn {
			conds = append(conds, col+" IN ("+strings.Join(ph, ", ")+")")
			continue
		}
		op, ok := compareOps[f.Op]
		if !ok || len(ph) != 1 {
			return nil, nil, fmt.Errorf("%w: operator %q of column %s", sources.ErrBadFilter, f.Op, c.name)
		}
		conds = append(conds, col+" "+op+" "+ph[0])
	}
	return conds, args, nil
}

var (
	filterDecimal  = regexp.MustCompile(`^[-+]?([0-9]+)(?:\.([0-9]+))?$`)
	filterDate     = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2})$`)
	filterDatetime = regexp.MustCompile(`^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[ T]((?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?))?Z?$`)
	filterTime     = regexp.MustCompile(`^-?([0-9]{1,3}):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?$`)
)

// filterParam is the placeholder and the argument of one filter value.
// MySQL converts a string compared with a number or a date leniently
// ('1abc' = 1, '2024-01-01 junk' = '2024-01-01', a bigint as a double), so
// the value of such a column is checked and converted here: integers and
// floats are bound as numbers, decimals as text cast to a DECIMAL that
// holds them exactly, temporal values as their canonical text. Other
// columns compare with the text as it is, in their collation.
func filterParam(t *tableSchema, c column, v string) (string, any, error) {
	bad := func(want string) error {
		// The value stays out: errors reach logs and job records.
		return fmt.Errorf("%w: column %s of %s is %s, and a value given for it is not %s", sources.ErrBadFilter, c.name, t.qualified(), c.dataType, want)
	}
	switch c.dataType {
	case "tinyint", "smallint", "mediumint", "int", "bigint", "year", "bit":
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			return "?", n, nil
		}
		if n, err := strconv.ParseUint(v, 10, 64); err == nil {
			return "?", n, nil
		}
		return "", nil, bad("an integer")
	case "float", "double":
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return "", nil, bad("a finite number")
		}
		return "?", f, nil
	case "decimal":
		m := filterDecimal.FindStringSubmatch(v)
		if m == nil {
			return "", nil, bad("a decimal number (digits, an optional sign and point)")
		}
		whole, frac := len(strings.TrimLeft(m[1], "0")), len(strings.TrimRight(m[2], "0"))
		if whole+frac > 65 || frac > 30 {
			return "", nil, bad("a DECIMAL (at most 65 digits, 30 after the point)")
		}
		return "CAST(? AS DECIMAL(" + strconv.Itoa(max(whole+frac, 1)) + "," + strconv.Itoa(frac) + "))", strings.TrimPrefix(v, "+"), nil
	case "date":
		if m := filterDate.FindStringSubmatch(v); m != nil && validDate(m[1]) {
			return "?", v, nil
		}
		return "", nil, bad("a date (YYYY-MM-DD)")
	case "datetime", "timestamp":
		if m := filterDatetime.FindStringSubmatch(v); m != nil && validDate(m[1]) {
			// The session's time zone is UTC, as the events' Z says.
			if m[2] == "" {
				return "?", m[1], nil
			}
			return "?", m[1] + " " + m[2], nil
		}
		return "", nil, bad("a date and time (YYYY-MM-DD hh:mm:ss[.ffffff], in UTC)")
	case "time":
		if m := filterTime.FindStringSubmatch(v); m != nil {
			if h, _ := strconv.Atoi(m[1]); h <= 838 {
				return "?", v, nil
			}
		}
		return "", nil, bad("a time ([-]hhh:mm:ss[.ffffff], at most 838 hours)")
	}
	return "?", v, nil
}

// validDate accepts a calendar date, or MySQL's zero date.
func validDate(d string) bool {
	if d == "0000-00-00" {
		return true
	}
	_, err := time.Parse(time.DateOnly, d)
	return err == nil
}

// keyColumn is how one key column is compared and ordered in a chunk query.
type keyColumn struct {
	expr  string                           // the column, as compared and ordered
	param string                           // the start value's placeholder
	arg   func(sources.Value) (any, error) // the start value from its JSON form
}

// keyOrder decides how a key column orders so that consumers, comparing
// the event's values, see the same order.
func keyOrder(t *tableSchema, c column) (keyColumn, error) {
	col := ident(c.name)
	switch c.dataType {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
		return keyColumn{expr: col, param: "?", arg: func(v sources.Value) (any, error) { return intArg(v, c.unsigned) }}, nil
	case "decimal":
		// A string compared with a DECIMAL is compared as a double: cast
		// it to the column's own type to compare exactly.
		param := fmt.Sprintf("CAST(? AS DECIMAL(%d,%d))", c.precision, c.scale)
		return keyColumn{expr: col, param: param, arg: decimalArg}, nil
	case "char", "varchar":
		// Bytewise order of the UTF-8 text: only a NO PAD binary collation
		// of a UTF-8 column orders so by itself (PAD SPACE collations, the
		// _bin ones included, sort "a\t" after "a"). Any other collation is
		// compared as bytes, and then no index on the column can serve the
		// ORDER BY: each chunk sorts the rest of the table.
		expr := col
		if !utf8Charset(c.charset) {
			expr = "CAST(CONVERT(" + col + " USING utf8mb4) AS BINARY)"
		} else if !bytewiseCollation(c.collation) {
			expr = "CAST(" + col + " AS BINARY)"
		}
		param := "CAST(? AS BINARY)"
		if expr == col {
			param = "?"
		}
		return keyColumn{expr: expr, param: param, arg: textArg}, nil
	case "binary", "varbinary":
		return keyColumn{expr: col, param: "CAST(? AS BINARY)", arg: bytesArg}, nil
	}
	return keyColumn{}, fmt.Errorf("%w: table %s, key column %s has type %s: backfill reads integer, decimal, char/varchar and binary/varbinary keys; give the table such a key, or list one under source.keys",
		sources.ErrUnsupportedKey, t.qualified(), c.name, c.dataType)
}

func utf8Charset(cs string) bool {
	switch cs {
	case "utf8mb4", "utf8mb3", "utf8", "ascii":
		return true
	}
	return false
}

// bytewiseCollation is a collation ordering UTF-8 text as its bytes: by
// code point, with no padding.
func bytewiseCollation(coll string) bool {
	return strings.HasSuffix(coll, "_nopad_bin") || coll == "utf8mb4_0900_bin"
}

func jsonText(v sources.Value) (string, bool) {
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

func intArg(v sources.Value, unsigned bool) (any, error) {
	s, ok := jsonText(v)
	if !ok {
		s = string(v)
	}
	if unsigned {
		return strconv.ParseUint(s, 10, 64)
	}
	return strconv.ParseInt(s, 10, 64)
}

var decimalText = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

func decimalArg(v sources.Value) (any, error) {
	s, ok := jsonText(v)
	if !ok {
		s = string(v)
	}
	if !decimalText.MatchString(s) {
		return nil, errors.New("not a decimal")
	}
	return s, nil
}

func textArg(v sources.Value) (any, error) {
	s, ok := jsonText(v)
	if !ok {
		return nil, errors.New("not a JSON string")
	}
	return s, nil
}

func bytesArg(v sources.Value) (any, error) {
	s, ok := jsonText(v)
	if !ok {
		return nil, errors.New("not a JSON string")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	return b, nil
}

// chunkCol writes a column of a chunk's rows as the binlog reader writes
// the same column.
type chunkCol struct {
	colCodec
	fsp int
	// padded: BINARY(n) is read back zero-padded, but the binlog carries it
	// without its trailing zero bytes.
	padded bool
}

func chunkCodec(c column) chunkCol {
	// Enum and set values arrive as their labels, so they are text here.
	cc := chunkCol{colCodec: colCodec{name: c.name, kind: kindText, bits: 64, unsigned: c.unsigned, charset: c.charset}, fsp: min(max(c.fsp, 0), 6)}
	switch c.dataType {
	case "tinyint", "smallint", "mediumint", "int", "bigint":
		cc.kind = kindInt
	case "year":
		cc.kind = kindYear
	case "bit":
		cc.kind = kindBit
	case "float":
		cc.kind = kindFloat32
	case "double":
		cc.kind = kindFloat64
	case "decimal":
		cc.kind = kindDecimal
	case "date":
		cc.kind = kindDate
	case "time":
		cc.kind = kindTime
	case "datetime", "timestamp":
		cc.kind = kindDatetime
	case "json":
		cc.kind = kindJSON
	case "geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection", "geomcollection":
		cc.kind = kindBytes
	case "binary":
		cc.kind, cc.padded = kindBytes, true
	default:
		if c.charset == "binary" {
			cc.kind = kindBytes
		}
	}
	return cc
}

// decodeChunkRow writes a result row as values sharing one buffer.
func decodeChunkRow(codecs []chunkCol, row []mysql.FieldValue) ([]sources.Value, error) {
	if len(row) != len(codecs) {
		return nil, fmt.Errorf("row has %d columns, the table %d", len(row), len(codecs))
	}
	ends := make([]int, len(row))
	var buf []byte
	for i := range row {
		var err error
		if buf, err = codecs[i].appendField(buf, &row[i]); err != nil {
			return nil, err
		}
		ends[i] = len(buf)
	}
	vals := make([]sources.Value, len(row))
	start := 0
	for i, end := range ends {
		vals[i] = buf[start:end:end]
		start = end
	}
	return vals, nil
}

// appendField turns a binary-protocol value into what the binlog decoder
// gives for the same value, and writes that with the binlog's codec.
func (c *chunkCol) appendField(dst []byte, fv *mysql.FieldValue) ([]byte, error) {
	var v any
	switch fv.Type {
	case mysql.FieldValueTypeNull:
	case mysql.FieldValueTypeUnsigned:
		v = fv.AsUint64()
	case mysql.FieldValueTypeSigned:
		v = fv.AsInt64()
	case mysql.FieldValueTypeFloat:
		v = fv.AsFloat64()
		if c.kind == kindFloat32 {
			v = float32(fv.AsFloat64())
		}
	case mysql.FieldValueTypeString:
		b := fv.AsString()
		switch c.kind {
		case kindBit:
			if len(b) > 8 {
				return dst, fmt.Errorf("column %s: %d bytes of BIT", c.name, len(b))
			}
			var full [8]byte
			copy(full[8-len(b):], b)
			v = binary.BigEndian.Uint64(full[:])
		case kindDecimal, kindDate:
			v = string(b)
		case kindDatetime:
			v = datetimeText(string(b), c.fsp)
		case kindTime:
			v = timeText(string(b), c.fsp)
		case kindBytes:
			if c.padded {
				b = trimZeros(b)
			}
			v = b
		default:
			v = b
		}
	default:
		return dst, fmt.Errorf("column %s: unknown value type %d", c.name, fv.Type)
	}
	return c.appendValue(dst, v)
}

func trimZeros(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// datetimeText writes "YYYY-MM-DD hh:mm:ss[.ffffff]" with exactly fsp
// fraction digits, as the binlog decoder does.
func datetimeText(s string, fsp int) string {
	base, frac, _ := strings.Cut(s, ".")
	if fsp == 0 {
		return base
	}
	return base + "." + (frac + "000000")[:fsp]
}

// timeText writes "[-]hh:mm:ss[.ffffff]" as the binlog decoder does: fsp
// fraction digits, and none at all when the fraction is zero.
func timeText(s string, fsp int) string {
	base, frac, _ := strings.Cut(s, ".")
	if fsp == 0 || strings.Trim(frac, "0") == "" {
		return base
	}
	return base + "." + (frac + "000000")[:fsp]
}
