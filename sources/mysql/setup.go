package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

// defaultTimeout bounds connecting and each catalog query round trip.
const defaultTimeout = 10 * time.Second

// connect opens a SQL connection; its errors name the server, not the DSN.
func connect(ctx context.Context, d dsn) (*client.Conn, error) {
	conn, err := dial(ctx, d, d.tls)
	if err == nil {
		return conn, nil
	}
	server := "MySQL at " + d.addr()
	var myErr *mysql.MyError
	switch {
	case sources.IsTLSFailure(err):
		return nil, sources.TLSError(err, server)
	case d.tls != nil && strings.Contains(err.Error(), "does not support TLS"):
		return nil, fmt.Errorf("%w: %s offers no TLS but source.tls.mode is %s: enable TLS on the server (ssl_cert, ssl_key), or set source.tls.mode: disable: %w",
			sources.ErrTLS, server, d.mode, err)
	case errors.As(err, &myErr) && myErr.Code == mysql.ER_ACCESS_DENIED_ERROR:
		if d.tls == nil && secureTransportRequired(ctx, d) {
			return nil, fmt.Errorf("%w: %s refused the plaintext connection: it requires secure transport (require_secure_transport = ON): set source.tls.mode: verify-full (with source.tls.ca for a private CA)",
				sources.ErrTLS, server)
		}
		return nil, fmt.Errorf("%w: %s refused user %q: wrong password or user (check source.dsn or the credentials source)",
			sources.ErrLoginRejected, server, d.user)
	}
	return nil, fmt.Errorf("%w: cannot connect to %s as %q: %w (is the server running and source.dsn right?)",
		sources.ErrDisconnected, server, d.user, err)
}

func dial(ctx context.Context, d dsn, tc *tls.Config) (*client.Conn, error) {
	return client.ConnectWithContext(ctx, d.addr(), d.user, d.password, "", defaultTimeout, func(c *client.Conn) error {
		if tc != nil {
			c.SetTLSConfig(tc)
		}
		return c.SetCharset("utf8mb4")
	})
}

// secureTransportRequired tells whether a login refused in plaintext is
// accepted over TLS. MariaDB answers a plaintext login under
// require_secure_transport with "access denied", which would otherwise be
// reported as a wrong password. The probe is no weaker than the plaintext
// attempt it follows.
func secureTransportRequired(ctx context.Context, d dsn) bool {
	conn, err := dial(ctx, d, &tls.Config{InsecureSkipVerify: true, ServerName: d.host})
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// transportOf describes conn's socket in d's mode.
func transportOf(conn *client.Conn, d dsn) sources.Transport {
	return sources.TransportOf(conn.Conn.Conn, d.mode)
}

// column is what decoding needs to know about one column beyond the binlog.
type column struct {
	name      string
	dataType  string   // information_schema DATA_TYPE: int, varchar, enum, ...
	unsigned  bool     // integer columns
	labels    []string // enum and set members, in order
	charset   string   // character columns; "binary" for binary strings and blobs
	collation string   // character columns
	// precision and scale of decimals, so a chunk bound compares exactly;
	// fsp is the fractional-second digits of temporal columns, which the
	// binlog writes and a chunk read must write alike.
	precision, scale, fsp int
	notNull               bool
	// clustered: part of the index InnoDB clusters rows by (COLUMN_KEY
	// PRI), the primary key or, without one, the first unique index over
	// NOT NULL columns.
	clustered bool
}

// tableSchema is a captured table as information_schema describes it.
type tableSchema struct {
	db, name string
	columns  []column
	key      []string
	keyFrom  string // as sources.KeyInfo.From
	keyWhy   string // as sources.KeyInfo.Why
}

func (t *tableSchema) qualified() string { return t.db + "." + t.name }

// serverInfo is what the prerequisite check learns about the server.
type serverInfo struct {
	flavor string // mysql.MySQLFlavor or mysql.MariaDBFlavor
	gtid   bool   // resume by GTID set
}

// checkServer reports every missing binlog prerequisite at once.
func checkServer(conn *client.Conn, user, positions string) (serverInfo, error) {
	info, problems, err := serverProblems(conn, user, positions)
	if err != nil {
		return info, err
	}
	if len(problems) > 0 {
		return info, fmt.Errorf("%w: %s", sources.ErrPrerequisite, strings.Join(problems, "; "))
	}
	return info, nil
}

// serverProblems lists the missing binlog prerequisites, each with its fix.
func serverProblems(conn *client.Conn, user, positions string) (serverInfo, []string, error) {
	var info serverInfo
	r, err := conn.Execute("SELECT @@version, @@log_bin, @@binlog_format, @@binlog_row_image")
	if err != nil {
		return info, nil, fmt.Errorf("read server settings: %w", err)
	}
	version, _ := r.GetString(0, 0)
	logBin, _ := r.GetInt(0, 1)
	format, _ := r.GetString(0, 2)
	image, _ := r.GetString(0, 3)
	info.flavor = mysql.MySQLFlavor
	if strings.Contains(strings.ToLower(version), "mariadb") {
		info.flavor = mysql.MariaDBFlavor
	}
	var problems []string
	if logBin != 1 {
		problems = append(problems, "the binary log is off: start the server with log_bin (e.g. log_bin = binlog in my.cnf)")
	}
	if !strings.EqualFold(format, "ROW") {
		problems = append(problems, fmt.Sprintf("binlog_format is %s: set binlog_format = ROW (SET GLOBAL binlog_format = 'ROW' and in my.cnf)", format))
	}
	if !strings.EqualFold(image, "FULL") {
		problems = append(problems, fmt.Sprintf("binlog_row_image is %s: set binlog_row_image = FULL (SET GLOBAL binlog_row_image = 'FULL' and in my.cnf)", image))
	}
	if info.flavor == mysql.MariaDBFlavor {
		// MariaDB writes GTIDs whatever its settings.
		info.gtid = true
	} else if r, err := conn.Execute("SELECT @@gtid_mode"); err == nil {
		mode, _ := r.GetString(0, 0)
		info.gtid = strings.EqualFold(mode, "ON")
	}
	switch positions {
	case "file":
		info.gtid = false
	case "gtid":
		if !info.gtid {
			problems = append(problems, "source.positions is gtid but gtid_mode is OFF: set gtid_mode = ON (with enforce_gtid_consistency = ON), or use positions: file")
		}
	}
	if missing := missingPrivileges(conn); len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("user %q lacks %s: GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO the sluice user",
			user, strings.Join(missing, " and ")))
	}
	return info, problems, nil
}

// missingPrivileges reads SHOW GRANTS for the replication privileges.
func missingPrivileges(conn *client.Conn) []string {
	r, err := conn.Execute("SHOW GRANTS")
	if err != nil {
		return nil // cannot tell; the binlog dump will say so itself
	}
	var grants strings.Builder
	for i := range r.RowNumber() {
		g, _ := r.GetString(i, 0)
		grants.WriteString(strings.ToUpper(g) + "\n")
	}
	all := grants.String()
	if strings.Contains(all, "ALL PRIVILEGES ON *.*") {
		return nil
	}
	var missing []string
	if !strings.Contains(all, "REPLICATION SLAVE") && !strings.Contains(all, "REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	if !strings.Contains(all, "REPLICATION CLIENT") && !strings.Contains(all, "BINLOG MONITOR") {
		missing = append(missing, "REPLICATION CLIENT")
	}
	return missing
}

// discoverTables resolves the captured tables, their columns and keys.
func discoverTables(conn *client.Conn, cfg Config, db string) ([]*tableSchema, error) {
	tables, refused, err := resolveTables(conn, cfg, db)
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, refused
	}
	if len(tables) == 0 && !slices.ContainsFunc(cfg.Tables, sources.IsTablePattern) {
		return nil, fmt.Errorf("no table to capture: list tables under source.tables, or give the tables of %q primary keys", db)
	}
	return tables, nil
}

// resolveTables is discoverTables that also returns the tables it could
// resolve when others are refused; refused lists every problem. A table
// named in source.tables must exist and have a key; one that only a
// pattern (or the every-table default) finds is left out, with a
// warning, when it has none.
func resolveTables(conn *client.Conn, cfg Config, db string) (tables []*tableSchema, refused, err error) {
	set, err := sources.NewTableSet(cfg.Tables, cfg.Exclude)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	lenient := map[string]bool{}
	switch {
	case set.Everything():
		if db == "" {
			return nil, nil, errors.New("source.tables is empty and source.dsn names no database: list the tables as db.table, or a pattern such as shop.*")
		}
		all, err := userTables(conn, db)
		if err != nil {
			return nil, nil, err
		}
		for _, qn := range all {
			if !set.Excluded(qn) {
				names = append(names, qn)
				lenient[qn] = true
			}
		}
	default:
		names = set.Listed()
		if set.HasPatterns() {
			all, err := userTables(conn, "")
			if err != nil {
				return nil, nil, err
			}
			for _, qn := range all {
				// The signal table is captured anyway, as sluice's own.
				if !isSignal(cfg, db, qn) && set.Matches(qn) {
					names = append(names, qn)
					lenient[qn] = true
				} else if set.Unfit(qn) && cfg.Log != nil {
					cfg.Log.Warn(sources.UnfitWarning, "table", qn)
				}
			}
		}
	}
	var problems, noKey, skipped []string
	for _, qn := range names {
		dbName, name, ok := strings.Cut(qn, ".")
		if !ok {
			problems = append(problems, fmt.Sprintf("source.tables: %q is not db.table", qn))
			continue
		}
		t, err := loadTable(conn, dbName, name)
		if err != nil {
			return nil, nil, err
		}
		if t == nil {
			problems = append(problems, fmt.Sprintf("table %s does not exist (source.tables)", qn))
			continue
		}
		t.preferConfigured(cfg.Keys[qn])
		switch {
		case len(t.key) == 0 && lenient[qn]:
			skipped = append(skipped, qn)
		case len(t.key) == 0:
			noKey = append(noKey, qn)
		default:
			tables = append(tables, t)
		}
	}
	if len(skipped) > 0 && cfg.Log != nil { // sluice check passes none
		cfg.Log.Warn("tables without a usable key are not captured: add a primary key or a unique index over NOT NULL columns, or list the key under source.keys",
			"tables", strings.Join(skipped, ","))
	}
	if len(noKey) > 0 {
		problems = append(problems, fmt.Sprintf("%v: %s: add one (ALTER TABLE %s ADD PRIMARY KEY (...)) or a unique index over NOT NULL columns, or list its key columns under source.keys (the binlog carries full rows)",
			sources.ErrNoPrimaryKey, strings.Join(noKey, ", "), noKey[0]))
	}
	switch {
	case len(noKey) > 0:
		refused = fmt.Errorf("%w: %s", sources.ErrNoPrimaryKey, strings.Join(problems, "; "))
	case len(problems) > 0:
		refused = errors.New(strings.Join(problems, "; "))
	}
	return tables, refused, nil
}

// systemSchemas are the server's own databases: no pattern matches them.
var systemSchemas = []string{"mysql", "information_schema", "performance_schema", "sys"}

// userTables lists the base tables of db, or with db "" of every
// database but the server's own, as db.table: what patterns are matched
// against.
func userTables(conn *client.Conn, db string) ([]string, error) {
	r, err := conn.Execute(`SELECT CONCAT(TABLE_SCHEMA, '.', TABLE_NAME) FROM information_schema.TABLES
		WHERE TABLE_TYPE = 'BASE TABLE' AND (TABLE_SCHEMA = ? OR ? = '') AND TABLE_SCHEMA NOT IN (?, ?, ?, ?) ORDER BY 1`,
		db, db, systemSchemas[0], systemSchemas[1], systemSchemas[2], systemSchemas[3])
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	names := make([]string, 0, r.RowNumber())
	for i := range r.RowNumber() {
		n, _ := r.GetString(i, 0)
		names = append(names, n)
	}
	return names, nil
}

// isSignal tells whether qn is the backfill's signal table as
// signalName will settle it; with neither source.signal_table nor a DSN
// database, any sluice_signal table.
func isSignal(cfg Config, db, qn string) bool {
	if cfg.SignalTable != "" {
		return qn == cfg.SignalTable
	}
	if db != "" {
		return qn == db+".sluice_signal"
	}
	_, name, _ := strings.Cut(qn, ".")
	return name == "sluice_signal"
}

// loadTable reads a table's columns and key, the primary key or else a
// unique index (see chooseUnique); nil if the table does not exist.
func loadTable(conn *client.Conn, db, name string) (*tableSchema, error) {
	r, err := conn.Execute(`SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IFNULL(CHARACTER_SET_NAME, ''),
		IFNULL(NUMERIC_PRECISION, 0), IFNULL(NUMERIC_SCALE, 0), IFNULL(DATETIME_PRECISION, 0), IFNULL(COLLATION_NAME, ''), IS_NULLABLE, COLUMN_KEY
		FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`, db, name)
	if err != nil {
		return nil, fmt.Errorf("read columns of %s.%s: %w", db, name, err)
	}
	if r.RowNumber() == 0 {
		return nil, nil
	}
	t := &tableSchema{db: db, name: name}
	for i := range r.RowNumber() {
		var c column
		c.name, _ = r.GetString(i, 0)
		c.dataType, _ = r.GetString(i, 1)
		colType, _ := r.GetString(i, 2)
		c.charset, _ = r.GetString(i, 3)
		prec, _ := r.GetInt(i, 4)
		scale, _ := r.GetInt(i, 5)
		fsp, _ := r.GetInt(i, 6)
		c.precision, c.scale, c.fsp = int(prec), int(scale), int(fsp)
		c.collation, _ = r.GetString(i, 7)
		nullable, _ := r.GetString(i, 8)
		c.notNull = nullable == "NO"
		colKey, _ := r.GetString(i, 9)
		c.clustered = colKey == "PRI"
		c.dataType = strings.ToLower(c.dataType)
		c.unsigned = strings.Contains(strings.ToLower(colType), "unsigned")
		if c.dataType == "enum" || c.dataType == "set" {
			c.labels = parseLabels(colType)
		}
		switch c.dataType {
		case "binary", "varbinary", "blob", "tinyblob", "mediumblob", "longblob":
			c.charset = "binary"
		}
		t.columns = append(t.columns, c)
	}
	r, err = conn.Execute(`SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION`, db, name)
	if err != nil {
		return nil, fmt.Errorf("read primary key of %s.%s: %w", db, name, err)
	}
	for i := range r.RowNumber() {
		k, _ := r.GetString(i, 0)
		t.key = append(t.key, k)
	}
	if len(t.key) > 0 {
		t.keyFrom = "primary key"
		return t, nil
	}
	// Prefix parts (SUB_PART) and expressions (no COLUMN_NAME) make an
	// index that the values of its columns do not identify a row by.
	r, err = conn.Execute(`SELECT INDEX_NAME, IFNULL(COLUMN_NAME, ''), SUB_PART IS NOT NULL FROM information_schema.STATISTICS
		WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX`, db, name)
	if err != nil {
		return nil, fmt.Errorf("read unique indexes of %s.%s: %w", db, name, err)
	}
	var indexes []uniqueIndex
	for i := range r.RowNumber() {
		ixName, _ := r.GetString(i, 0)
		col, _ := r.GetString(i, 1)
		prefix, _ := r.GetInt(i, 2)
		if len(indexes) == 0 || indexes[len(indexes)-1].name != ixName {
			indexes = append(indexes, uniqueIndex{name: ixName, usable: true})
		}
		ix := &indexes[len(indexes)-1]
		ix.columns = append(ix.columns, col)
		c := t.column(col)
		ix.usable = ix.usable && c != nil && c.notNull && prefix == 0
	}
	if ix, ok := chooseUnique(indexes, t.clusteredColumns()); ok {
		t.key, t.keyFrom, t.keyWhy = ix.columns, "unique index "+ix.name, "over NOT NULL columns"
		if ix.clustered {
			t.keyWhy += ", InnoDB's clustered index"
		}
	}
	return t, nil
}

// uniqueIndex is a unique index other than the primary key.
type uniqueIndex struct {
	name    string
	columns []string // in SEQ_IN_INDEX order
	// usable: every column NOT NULL and whole (no prefix, no expression),
	// so the columns' values identify one row.
	usable    bool
	clustered bool // set by chooseUnique: the index InnoDB clusters the rows by
}

// chooseUnique picks the key of a table without a primary key: the usable
// unique index that InnoDB clusters the rows by (the first such index the
// server lists, whose columns information_schema marks PRI), so the key is
// the one the server itself treats as primary; otherwise, as on other
// engines, the one with the fewest columns, then the first by name.
func chooseUnique(indexes []uniqueIndex, clustered []string) (uniqueIndex, bool) {
	var best *uniqueIndex
	for i := range indexes {
		ix := &indexes[i]
		if !ix.usable {
			continue
		}
		ix.clustered = len(clustered) > 0 && sameColumns(ix.columns, clustered)
		switch {
		case best == nil,
			ix.clustered && !best.clustered,
			ix.clustered == best.clustered && len(ix.columns) < len(best.columns),
			ix.clustered == best.clustered && len(ix.columns) == len(best.columns) && ix.name < best.name:
			best = ix
		}
	}
	if best == nil {
		return uniqueIndex{}, false
	}
	return *best, true
}

// sameColumns tells whether a and b hold the same columns in any order.
func sameColumns(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !slices.Contains(b, c) {
			return false
		}
	}
	return true
}

// preferConfigured applies source.keys to a table without a primary key:
// the operator's choice beats a unique index sluice picked.
func (t *tableSchema) preferConfigured(configured []string) {
	if t.keyFrom != "primary key" && len(configured) > 0 {
		t.key, t.keyFrom, t.keyWhy = configured, "source.keys", "the binlog carries full rows"
	}
}

func (t *tableSchema) column(name string) *column {
	for i := range t.columns {
		if t.columns[i].name == name {
			return &t.columns[i]
		}
	}
	return nil
}

func (t *tableSchema) clusteredColumns() []string {
	var out []string
	for _, c := range t.columns {
		if c.clustered {
			out = append(out, c.name)
		}
	}
	return out
}

// parseLabels reads the members of enum('a','b”c') or set(...).
func parseLabels(colType string) []string {
	open, end := strings.IndexByte(colType, '('), strings.LastIndexByte(colType, ')')
	if open < 0 || end < open {
		return nil
	}
	var labels []string
	s := colType[open+1 : end]
	for len(s) > 0 {
		if s[0] != '\'' {
			s = s[1:]
			continue
		}
		var b strings.Builder
		i := 1
		for i < len(s) {
			if s[i] == '\'' {
				if i+1 < len(s) && s[i+1] == '\'' {
					b.WriteByte('\'')
					i += 2
					continue
				}
				break
			}
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
			i++
		}
		labels = append(labels, b.String())
		s = s[min(i+1, len(s)):]
	}
	return labels
}

// currentPosition is where the binlog ends now.
func currentPosition(conn *client.Conn, info serverInfo) (position, error) {
	if info.gtid {
		q := "SELECT @@GLOBAL.gtid_executed"
		if info.flavor == mysql.MariaDBFlavor {
			q = "SELECT @@GLOBAL.gtid_binlog_pos"
		}
		r, err := conn.Execute(q)
		if err != nil {
			return position{}, fmt.Errorf("read the current GTID position: %w", err)
		}
		s, _ := r.GetString(0, 0)
		set, err := mysql.ParseGTIDSet(info.flavor, s)
		if err != nil {
			return position{}, fmt.Errorf("current GTID position %q: %w", s, err)
		}
		return position{gtid: set}, nil
	}
	r, err := conn.Execute("SHOW MASTER STATUS")
	if err != nil {
		return position{}, fmt.Errorf("read the current binlog position (SHOW MASTER STATUS needs REPLICATION CLIENT): %w", err)
	}
	if r.RowNumber() == 0 {
		return position{}, errors.New("SHOW MASTER STATUS returned nothing: is log_bin on?")
	}
	file, _ := r.GetString(0, 0)
	pos, _ := r.GetUint(0, 1)
	return position{file: file, pos: uint32(pos)}, nil
}

// classify marks connection-level failures as transient and a purged
// binlog as a lost position.
func classify(err error) error {
	if err == nil || errors.Is(err, sources.ErrDisconnected) || errors.Is(err, sources.ErrLogLost) || errors.Is(err, sources.ErrTLS) {
		return err
	}
	var myErr *mysql.MyError
	if errors.As(err, &myErr) {
		switch myErr.Code {
		case mysql.ER_MASTER_FATAL_ERROR_READING_BINLOG:
			return fmt.Errorf("%w: the server does not have the binlog at the checkpoint (purged, or a promoted replica that lacks it): %s", sources.ErrLogLost, myErr.Message)
		case mysql.ER_SERVER_SHUTDOWN, mysql.ER_CON_COUNT_ERROR, mysql.ER_TOO_MANY_USER_CONNECTIONS:
			return fmt.Errorf("%w: %w", sources.ErrDisconnected, err)
		case mysql.ER_ACCESS_DENIED_ERROR:
			return fmt.Errorf("%w: %w", sources.ErrLoginRejected, err)
		}
		return err
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, mysql.ErrBadConn) || strings.Contains(err.Error(), "EOF") {
		return fmt.Errorf("%w: %w", sources.ErrDisconnected, err)
	}
	return err
}
