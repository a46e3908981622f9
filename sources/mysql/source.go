package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/sluice-cdc/sluice/sources"
)

// Source reads one server's binlog.
type Source struct {
	cfg  Config
	dsn  dsn
	info serverInfo
	conn *client.Conn // catalog queries, used only by the goroutine in Stream
	// tables are the captured tables, the signal table included. Only the
	// goroutine in Stream changes them (a table created or dropped while
	// it runs), under tablesMu; others read them under it.
	tablesMu sync.RWMutex
	tables   map[string]*tableSchema
	set      sources.TableSet
	// skipped: tables a pattern matches that could not be captured, told
	// once; cleared by DDL, which may have given them a key.
	skipped map[string]bool
	// signal is the backfill's watermark table: captured like the others,
	// but not one of the user's tables.
	signal tableName
	// shapesMu guards shapes: Stream and the backfill's ReadChunk both
	// register shapes, from different goroutines.
	shapesMu sync.Mutex
	shapes   map[string]*sources.Table // last shape seen per table, for versions
	bf       backfillConn
	// anchor is where the binlog ended when New ran: a first start (no
	// checkpoint) streams from there, so changes committed while sluice
	// waits for NATS are not skipped.
	anchor   position
	anchored bool
	// hostMu guards host, the server Stream reads from, which the backfill
	// follows from its own goroutine.
	hostMu sync.Mutex
	host   hostPort
}

// New connects, checks the prerequisites and reads the captured tables.
func New(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.ServerID == 0 {
		cfg.ServerID = DefaultServerID(cfg.Name)
	}
	if cfg.HeartbeatPeriod <= 0 {
		cfg.HeartbeatPeriod = defaultHeartbeat
	}
	d, err := parseConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, dsn: d, tables: map[string]*tableSchema{}, shapes: map[string]*sources.Table{}, skipped: map[string]bool{}}
	if s.set, err = sources.NewTableSet(cfg.Tables, cfg.Exclude); err != nil {
		return nil, err
	}
	if _, err := s.login(ctx); err != nil {
		return nil, err
	}
	conn, d, err := connectPrimary(ctx, s.dsn, hostPort{})
	if err != nil {
		return nil, err
	}
	s.conn = conn
	s.useHost(d)
	if err := s.setup(); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *Source) setup() error {
	info, err := checkServer(s.conn, s.dsn.user, s.cfg.Positions)
	if err != nil {
		return err
	}
	s.info = info
	if r, err := s.conn.Execute("SELECT @@binlog_row_metadata"); err == nil {
		if m, _ := r.GetString(0, 0); !strings.EqualFold(m, "FULL") {
			s.cfg.Log.Warn("binlog_row_metadata is not FULL: column names are read from information_schema, so rows written before a later ALTER TABLE cannot be decoded; set binlog_row_metadata = FULL",
				"binlog_row_metadata", m)
		}
	}
	tables, err := discoverTables(s.conn, s.cfg, s.dsn.db)
	if err != nil {
		return err
	}
	if s.signal, err = signalName(s.cfg.SignalTable, s.dsn.db, tables); err != nil {
		return err
	}
	var names []string
	for _, t := range tables {
		if t.db == s.signal.db && t.name == s.signal.name {
			continue // auto-discovered, or listed: it is added below either way
		}
		if err := markJSON(s.conn, t); err != nil {
			return err
		}
		s.tables[t.qualified()] = t
		names = append(names, t.qualified())
	}
	if len(names) == 0 && !s.set.HasPatterns() {
		return fmt.Errorf("no table to capture besides the signal table %s: list tables under source.tables, or give the tables of %q primary keys", s.signal, s.dsn.db)
	}
	if len(names) == 0 {
		s.cfg.Log.Warn("no table matches source.tables yet: tables created later that match are captured", "tables", strings.Join(s.cfg.Tables, ","))
	}
	signal, err := ensureSignalTable(s.conn, s.signal, s.dsn.user)
	if err != nil {
		return err
	}
	s.tables[signal.qualified()] = signal
	mode := "file:offset"
	if info.gtid {
		mode = "GTID"
	}
	s.cfg.Log.Info("capturing tables", "tables", strings.Join(names, ","), "signal_table", s.signal.String(),
		"flavor", info.flavor, "positions", mode, "server_id", s.cfg.ServerID)
	// The capture point is fixed before anything else waits: a first
	// start streams every change committed after this line.
	if s.anchor, err = currentPosition(s.conn, s.info); err != nil {
		return err
	}
	s.anchored = true
	s.cfg.Log.Info("capturing from "+s.anchor.String()+" unless a checkpoint says otherwise", "position", s.anchor.String())
	return nil
}

// markJSON finds MariaDB's JSON columns: they are LONGTEXT with a
// json_valid check, and their values are JSON, not strings.
func markJSON(conn *client.Conn, t *tableSchema) error {
	r, err := conn.Execute(`SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?`, t.db, t.name)
	if err != nil {
		return nil // MySQL before 8.0.16 has no such view; its JSON type is explicit
	}
	for i := range r.RowNumber() {
		clause, _ := r.GetString(i, 0)
		if m := jsonValid.FindStringSubmatch(clause); m != nil {
			for j := range t.columns {
				if t.columns[j].name == m[1] {
					t.columns[j].dataType = "json"
				}
			}
		}
	}
	return nil
}

var jsonValid = regexp.MustCompile("^json_valid\\(`([^`]+)`\\)$")

// login asks the credentials source, if any, for the login to use now and
// puts it into the DSN.
func (s *Source) login(ctx context.Context) (*sources.Login, error) {
	if s.cfg.Credentials == nil {
		return nil, nil
	}
	l, err := s.cfg.Credentials.Login(ctx)
	if err != nil {
		return nil, err
	}
	s.dsn.user, s.dsn.password = l.User, l.Password
	return &l, nil
}

// binlogTLS is the binlog connection's TLS, the query connections' own,
// and what its handshake turned out to be: go-mysql keeps that connection
// to itself, so the handshake reports it on the way.
func (s *Source) binlogTLS() (*tls.Config, *atomic.Pointer[sources.Transport]) {
	var seen atomic.Pointer[sources.Transport]
	seen.Store(&sources.Transport{Mode: s.dsn.mode})
	if s.dsn.tls == nil {
		return nil, &seen
	}
	c := s.dsn.tls.Clone()
	verify, mode := c.VerifyConnection, s.dsn.mode
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if verify != nil {
			if err := verify(cs); err != nil {
				return err
			}
		}
		t := sources.TransportOfState(cs, mode)
		seen.Store(&t)
		return nil
	}
	return c, &seen
}

// useHost makes d's server the one every connection uses from now on,
// and says so when it changes: after a failover that is the one line
// naming where sluice went.
func (s *Source) useHost(d dsn) {
	h := hostPort{host: d.host, port: d.port}
	s.hostMu.Lock()
	prev := s.host
	s.host = h
	s.hostMu.Unlock()
	s.dsn.host, s.dsn.port, s.dsn.tls = d.host, d.port, d.tls
	if prev != (hostPort{}) && prev != h {
		s.cfg.Log.Warn("source host changed: reading from the writable one", "from", prev.String(), "to", h.String())
	}
}

func (s *Source) currentHost() hostPort {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	return s.host
}

// Database is the DSN's database, for the event's source.db.
func (s *Source) Database() string { return s.dsn.db }

// Start is where the binlog ended when the source was opened: MySQL keeps
// no bookmark of a reader, so the engine saves it as the first checkpoint.
func (s *Source) Start() sources.Position {
	if !s.anchored {
		return ""
	}
	return sources.Position(s.anchor.String())
}

// Ack does nothing: a MySQL server keeps its binlog by age, not by replica
// progress. The checkpoint is the only record of where to resume.
func (s *Source) Ack(sources.Position) {}

// RetainedBytes is -1: a MySQL server keeps its binlog by age, not for
// a reader.
func (s *Source) RetainedBytes() int64 { return -1 }

// Close releases the catalog and backfill connections.
func (s *Source) Close(context.Context) error {
	s.bf.close()
	if s.conn == nil {
		return nil
	}
	return s.conn.Close()
}

// Stream reads the binlog from `from`, or from its current end on a first start.
func (s *Source) Stream(ctx context.Context, from sources.Position, h sources.Handler) error {
	prevUser := s.dsn.user
	login, err := s.login(ctx)
	if err != nil {
		return err
	}
	if s.conn == nil || s.dsn.user != prevUser || s.conn.Ping() != nil ||
		(s.dsn.multiHost() && checkWritable(s.conn, s.dsn) != nil) {
		if s.conn != nil {
			s.conn.Close()
			s.conn = nil
		}
		conn, d, err := connectPrimary(ctx, s.dsn, s.currentHost())
		if err != nil {
			return sources.RetryRejected(s.cfg.Credentials, login, err)
		}
		s.conn = conn
		s.useHost(d)
		// Shapes may have changed while we were away.
		if err := s.reloadAll(); err != nil {
			return classify(err)
		}
	}
	var start position
	if from == "" {
		if s.anchored {
			start = s.anchor
		} else if start, err = currentPosition(s.conn, s.info); err != nil {
			return classify(err)
		}
		// Record the starting point at once, so a restart resumes here.
		if err := h.Commit(ctx, sources.Commit{Pos: sources.Position(start.String()), Time: time.Now()}); err != nil {
			return err
		}
	} else if start, err = parsePosition(s.info.flavor, from); err != nil {
		return err
	} else if err := checkHasGTIDs(s.conn, s.info, start, s.dsn.addr()); err != nil {
		return classify(err)
	}

	tlsConfig, binlogTransport := s.binlogTLS()
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:                s.cfg.ServerID,
		Flavor:                  s.info.flavor,
		Host:                    s.dsn.host,
		Port:                    s.dsn.port,
		User:                    s.dsn.user,
		Password:                s.dsn.password,
		TLSConfig:               tlsConfig,
		Charset:                 "utf8mb4",
		HeartbeatPeriod:         s.cfg.HeartbeatPeriod,
		ReadTimeout:             3 * s.cfg.HeartbeatPeriod,
		TimestampStringLocation: time.UTC,
		RenderJSONAsMySQLText:   true,
		// Reconnects go through the pipeline, which resumes from what is
		// stored; the syncer's own retry would resume from what was read.
		DisableRetrySync: true,
		// go-mysql reads ahead up to this many decoded events (10,240 by
		// default: hundreds of MB of rows when a big transaction streams
		// faster than JetStream takes it). The publish window is the
		// buffer that matters; this one only has to keep the reader busy.
		EventCacheCount: 256,
		Logger:          slog.New(warnOnly{s.cfg.Log.Handler()}),
	})
	defer syncer.Close()
	var streamer *replication.BinlogStreamer
	if start.gtid != nil {
		streamer, err = syncer.StartSyncGTID(start.gtid.Clone())
	} else {
		streamer, err = syncer.StartSync(mysql.Position{Name: start.file, Pos: start.pos})
	}
	if err != nil {
		if sources.IsTLSFailure(err) {
			return sources.TLSError(err, "MySQL at "+s.dsn.addr()+" (binlog connection)")
		}
		return sources.RetryRejected(s.cfg.Credentials, login, classify(fmt.Errorf("start binlog dump at %s: %w", start, err)))
	}
	s.cfg.Log.Info("streaming", "from", start.String(), "tls", binlogTransport.Load().String())
	sources.Opened(h)
	sctx, expired, stop := login.UntilExpiring(ctx)
	defer stop()
	r := &reader{s: s, h: h, pos: start, maps: map[uint64]*tableMap{}}
	// A primary demoted in a switchover stays up and keeps the binlog
	// connection open, but its binlog ends: with several hosts, sluice
	// checks every heartbeat period that it still reads the writable one.
	// One deadline serves every read of a period, none is made per event.
	var check period
	defer check.stop()
	gctx := sctx
	if s.dsn.multiHost() {
		gctx = check.renew(sctx, s.cfg.HeartbeatPeriod)
	}
	for {
		ev, err := streamer.GetEvent(gctx)
		if err != nil && sctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			if err := checkWritable(s.conn, s.dsn); err != nil {
				return fmt.Errorf("%w: sluice moves to the writable host of source.dsn", err)
			}
			gctx = check.renew(sctx, s.cfg.HeartbeatPeriod)
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if expired() {
				return sources.ErrLoginExpiring
			}
			return classify(err)
		}
		if err := r.event(ctx, ev); err != nil {
			return classify(err)
		}
	}
}

// period is a context that ends after a while, renewed each time.
type period struct{ cancel context.CancelFunc }

func (p *period) renew(parent context.Context, d time.Duration) context.Context {
	p.stop()
	ctx, cancel := context.WithTimeout(parent, d)
	p.cancel = cancel
	return ctx
}

func (p *period) stop() {
	if p.cancel != nil {
		p.cancel()
	}
}

// warnOnly keeps go-mysql's connection chatter out of sluice's log.
type warnOnly struct{ slog.Handler }

func (w warnOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && w.Handler.Enabled(ctx, l)
}

// tableMap is a decoded table map: how to read the rows that follow it.
type tableMap struct {
	tme    *replication.TableMapEvent
	table  *sources.Table // nil when the table is not captured
	codecs []colCodec
}

// reader is the state of one binlog stream.
type reader struct {
	s    *Source
	h    sources.Handler
	pos  position // resume point after the last complete transaction
	file string   // current binlog file, for file positions
	maps map[uint64]*tableMap
	tx   struct {
		open    bool             // a GTID or BEGIN started it
		inBegin bool             // inside BEGIN ... COMMIT
		gtid    string           // this transaction's GTID, "" in file mode
		pos     sources.Position // message-id position
		id      uint64
		time    time.Time
	}
}

var (
	ddl      = regexp.MustCompile(`(?is)^\s*(?:/\*.*?\*/\s*)*(ALTER|CREATE|DROP|RENAME)\s+(?:ONLINE\s+|IGNORE\s+|TEMPORARY\s+)*TABLE\b`)
	truncate = regexp.MustCompile("(?is)^\\s*(?:/\\*.*?\\*/\\s*)*TRUNCATE\\s+(?:TABLE\\s+)?`?([^`.\\s]+)`?(?:\\.`?([^`\\s;]+)`?)?")
)

func (r *reader) event(ctx context.Context, ev *replication.BinlogEvent) error {
	hdr := ev.Header
	switch e := ev.Event.(type) {
	case *replication.RotateEvent:
		r.file = string(e.NextLogName)
		if r.pos.gtid == nil {
			r.pos.file, r.pos.pos = r.file, uint32(e.Position)
		}
	case *replication.MariadbGTIDEvent:
		r.begin(e.GTID.String(), e.GTID.SequenceNumber, hdr)
	case *replication.GTIDEvent:
		if e.GNO == 0 {
			// An anonymous GTID (gtid_mode OFF) names nothing: the
			// transaction is named by its binlog offset at BEGIN.
			return nil
		}
		next, err := e.GTIDNext()
		if err != nil {
			return fmt.Errorf("read GTID: %w", err)
		}
		r.begin(next.String(), uint64(e.GNO), hdr)
	case *replication.QueryEvent:
		return r.query(ctx, e, hdr)
	case *replication.TableMapEvent:
		return r.tableMap(e)
	case *replication.RowsEvent:
		return r.rows(ctx, e, ev.Header.EventType)
	case *replication.XIDEvent:
		return r.commit(ctx, hdr)
	}
	return nil
}

func (r *reader) begin(gtid string, id uint64, hdr *replication.EventHeader) {
	r.tx.open, r.tx.gtid, r.tx.id = true, gtid, id
	r.tx.pos = sources.Position(gtid)
	r.tx.time = time.Unix(int64(hdr.Timestamp), 0)
}

func (r *reader) query(ctx context.Context, e *replication.QueryEvent, hdr *replication.EventHeader) error {
	q := string(e.Query)
	switch {
	case strings.EqualFold(q, "BEGIN"):
		r.ensureTx(hdr)
		r.tx.inBegin = true
		return nil
	case strings.EqualFold(q, "COMMIT"):
		return r.commit(ctx, hdr)
	}
	if m := truncate.FindStringSubmatch(q); m != nil {
		db, name := string(e.Schema), m[1]
		if m[2] != "" {
			db, name = m[1], m[2]
		}
		if t, ok := r.s.tables[db+"."+name]; ok {
			r.ensureTx(hdr)
			shape := r.s.lastShape(t.qualified())
			if shape == nil {
				shape = r.s.shape(t, nil)
			}
			if err := r.h.Change(ctx, &sources.Change{Op: sources.OpTruncate, Table: shape, Pos: r.tx.pos, TxID: r.tx.id, CommitTime: r.tx.time}); err != nil {
				return err
			}
		}
	} else if ddl.MatchString(q) {
		// The shape of captured tables may have changed: read it again,
		// and forget table maps, so the next rows get the new shape.
		if err := r.s.reloadAll(); err != nil {
			return err
		}
		clear(r.maps)
		clear(r.s.skipped)
	}
	// A statement outside BEGIN ... COMMIT (DDL, TRUNCATE) commits by itself.
	if !r.tx.inBegin {
		return r.commit(ctx, hdr)
	}
	return nil
}

// ensureTx names a transaction that no GTID event started (file mode) by
// where it starts in the binlog.
func (r *reader) ensureTx(hdr *replication.EventHeader) {
	if r.tx.open {
		return
	}
	r.tx.open, r.tx.id = true, 0
	r.tx.pos = sources.Position(fmt.Sprintf("%s:%d", r.file, hdr.LogPos))
	r.tx.time = time.Unix(int64(hdr.Timestamp), 0)
}

// commit ends the transaction and hands its resume position over.
func (r *reader) commit(ctx context.Context, hdr *replication.EventHeader) error {
	if r.pos.gtid != nil {
		if r.tx.gtid != "" {
			if err := r.pos.gtid.Update(r.tx.gtid); err != nil {
				return fmt.Errorf("advance GTID set by %s: %w", r.tx.gtid, err)
			}
		}
	} else {
		r.pos.file, r.pos.pos = r.file, hdr.LogPos
	}
	t := r.tx.time
	r.tx.open, r.tx.inBegin, r.tx.gtid, r.tx.pos, r.tx.id = false, false, "", "", 0
	return r.h.Commit(ctx, sources.Commit{Pos: sources.Position(r.pos.String()), Time: t})
}

// reloadAll reads the shapes of the captured tables again, and stops
// capturing the dropped ones.
func (s *Source) reloadAll() error {
	var dropped []string
	for qn, t := range s.tables {
		gone, err := s.reload(t)
		if err != nil {
			return err
		}
		if gone && qn != s.signal.String() {
			dropped = append(dropped, qn)
		}
	}
	slices.Sort(dropped)
	for _, qn := range dropped {
		s.tablesMu.Lock()
		delete(s.tables, qn)
		s.tablesMu.Unlock()
		s.cfg.Log.Warn("table dropped: no longer captured", "table", qn)
	}
	return nil
}

// reload reads a table's shape from information_schema again; gone tells
// that the table no longer exists.
func (s *Source) reload(t *tableSchema) (gone bool, err error) {
	fresh, err := loadTable(s.conn, t.db, t.name)
	if err != nil {
		return false, err
	}
	if fresh == nil {
		return true, nil
	}
	if err := markJSON(s.conn, fresh); err != nil {
		return false, err
	}
	fresh.preferConfigured(s.cfg.Keys[t.qualified()])
	if len(fresh.key) == 0 {
		// The key left the catalog (its index was dropped): keep the
		// old one, an event is never without a key.
		fresh.key, fresh.keyFrom, fresh.keyWhy = t.key, t.keyFrom, t.keyWhy
	}
	*t = *fresh
	return false, nil
}

// join captures table db.name when a pattern of source.tables matches it
// and it has a key: a table created while sluice runs, met in the binlog.
// nil when it is not captured.
func (s *Source) join(db, name string) (*tableSchema, error) {
	qn := db + "." + name
	if s.set.Unfit(qn) && !s.skipped[qn] {
		s.skipped[qn] = true // warned once
		s.cfg.Log.Warn(sources.UnfitWarning, "table", qn)
	}
	if !s.set.Matches(qn) || s.skipped[qn] || isSignal(s.cfg, s.dsn.db, qn) || slices.Contains(systemSchemas, db) {
		return nil, nil
	}
	t, err := loadTable(s.conn, db, name)
	if err != nil || t == nil {
		return nil, err
	}
	if err := markJSON(s.conn, t); err != nil {
		return nil, err
	}
	t.preferConfigured(s.cfg.Keys[qn])
	if len(t.key) == 0 {
		s.skipped[qn] = true
		s.cfg.Log.Warn("a table that source.tables matches is not captured: it has no usable key; add a primary key or a unique index over NOT NULL columns, or list the key under source.keys",
			"table", qn)
		return nil, nil
	}
	s.tablesMu.Lock()
	s.tables[qn] = t
	s.tablesMu.Unlock()
	s.cfg.Log.Info("table created: captured", "table", qn, "key", strings.Join(t.key, ","))
	if s.cfg.OnTableAdded != nil {
		s.cfg.OnTableAdded(qn)
	}
	return t, nil
}

func (r *reader) tableMap(e *replication.TableMapEvent) error {
	if m, ok := r.maps[e.TableID]; ok && string(m.tme.Schema) == string(e.Schema) && string(m.tme.Table) == string(e.Table) &&
		string(m.tme.ColumnType) == string(e.ColumnType) && slices.Equal(m.tme.ColumnNameString(), e.ColumnNameString()) {
		return nil
	}
	t, ok := r.s.tables[string(e.Schema)+"."+string(e.Table)]
	if !ok {
		var err error
		if t, err = r.s.join(string(e.Schema), string(e.Table)); err != nil {
			return err
		}
	}
	if t == nil {
		r.maps[e.TableID] = &tableMap{tme: e}
		return nil
	}
	m, err := r.s.newTableMap(t, e)
	if err != nil {
		return err
	}
	r.maps[e.TableID] = m
	return nil
}

// newTableMap builds the row decoder for a captured table. Column names come
// from the binlog itself when the server logs them (binlog_row_metadata =
// FULL); otherwise from information_schema, which must then match.
func (s *Source) newTableMap(t *tableSchema, e *replication.TableMapEvent) (*tableMap, error) {
	names := e.ColumnNameString()
	if len(names) == 0 {
		if len(t.columns) != int(e.ColumnCount) {
			return nil, fmt.Errorf("table %s has %d columns in the binlog but %d in information_schema: the table changed after these rows were written; set binlog_row_metadata = FULL so the binlog carries column names",
				t.qualified(), e.ColumnCount, len(t.columns))
		}
		for _, c := range t.columns {
			names = append(names, c.name)
		}
	}
	byName := make(map[string]column, len(t.columns))
	for _, c := range t.columns {
		byName[c.name] = c
	}
	enums, sets := e.EnumStrValueMap(), e.SetStrValueMap()
	unsigned := e.UnsignedMap()
	m := &tableMap{tme: e, codecs: make([]colCodec, len(names))}
	for i, name := range names {
		c := byName[name]
		codec := colCodec{name: name, unsigned: c.unsigned || unsigned[i], charset: c.charset, labels: c.labels}
		if l, ok := enums[i]; ok {
			codec.labels = l
		}
		if l, ok := sets[i]; ok {
			codec.labels = l
		}
		codec.kind, codec.bits = kindOf(e, i, c)
		m.codecs[i] = codec
	}
	m.table = s.shape(t, m.codecs)
	return m, nil
}

// shape returns the table's shape for these columns: the same *Table as
// before when nothing changed, else a new one with the next version.
func (s *Source) shape(t *tableSchema, codecs []colCodec) *sources.Table {
	next := &sources.Table{Schema: t.db, Name: t.name}
	if codecs == nil {
		for _, c := range t.columns {
			next.Columns = append(next.Columns, c.name)
			next.Types = append(next.Types, c.dataType)
			next.Kinds = append(next.Kinds, valueKind(c.dataType))
			next.NotNull = append(next.NotNull, c.notNull)
		}
	} else {
		byName := map[string]column{}
		for _, c := range t.columns {
			byName[c.name] = c
		}
		for _, c := range codecs {
			next.Columns = append(next.Columns, c.name)
			next.Types = append(next.Types, byName[c.name].dataType)
			next.Kinds = append(next.Kinds, valueKind(byName[c.name].dataType))
			next.NotNull = append(next.NotNull, byName[c.name].notNull)
		}
	}
	for _, k := range t.key {
		next.Key = append(next.Key, slices.Index(next.Columns, k))
	}
	s.shapesMu.Lock()
	defer s.shapesMu.Unlock()
	prev := s.shapes[t.qualified()]
	if prev != nil && slices.Equal(prev.Columns, next.Columns) && slices.Equal(prev.Types, next.Types) &&
		slices.Equal(prev.Key, next.Key) && slices.Equal(prev.NotNull, next.NotNull) {
		return prev
	}
	next.Version = 1
	if prev != nil {
		next.Version = prev.Version + 1
	}
	s.shapes[t.qualified()] = next
	return next
}

// lastShape is the table's latest shape, nil if none was seen yet.
func (s *Source) lastShape(qualified string) *sources.Table {
	s.shapesMu.Lock()
	defer s.shapesMu.Unlock()
	return s.shapes[qualified]
}

// kindOf decides how column i is written, from its binlog type.
func kindOf(e *replication.TableMapEvent, i int, c column) (kind, uint) {
	switch e.ColumnType[i] {
	case mysql.MYSQL_TYPE_TINY:
		return kindInt, 8
	case mysql.MYSQL_TYPE_SHORT:
		return kindInt, 16
	case mysql.MYSQL_TYPE_INT24:
		return kindInt, 24
	case mysql.MYSQL_TYPE_LONG:
		return kindInt, 32
	case mysql.MYSQL_TYPE_LONGLONG:
		return kindInt, 64
	case mysql.MYSQL_TYPE_YEAR:
		return kindYear, 0
	case mysql.MYSQL_TYPE_BIT:
		return kindBit, 64
	case mysql.MYSQL_TYPE_FLOAT:
		return kindFloat32, 0
	case mysql.MYSQL_TYPE_DOUBLE:
		return kindFloat64, 0
	case mysql.MYSQL_TYPE_NEWDECIMAL, mysql.MYSQL_TYPE_DECIMAL:
		return kindDecimal, 0
	case mysql.MYSQL_TYPE_DATE, mysql.MYSQL_TYPE_NEWDATE:
		return kindDate, 0
	case mysql.MYSQL_TYPE_TIME, mysql.MYSQL_TYPE_TIME2:
		return kindTime, 0
	case mysql.MYSQL_TYPE_DATETIME, mysql.MYSQL_TYPE_DATETIME2, mysql.MYSQL_TYPE_TIMESTAMP, mysql.MYSQL_TYPE_TIMESTAMP2:
		return kindDatetime, 0
	case mysql.MYSQL_TYPE_JSON:
		return kindJSON, 0
	case mysql.MYSQL_TYPE_ENUM:
		return kindEnum, 0
	case mysql.MYSQL_TYPE_SET:
		return kindSet, 0
	case mysql.MYSQL_TYPE_GEOMETRY:
		return kindBytes, 0
	}
	switch {
	case e.IsEnumColumn(i):
		return kindEnum, 0
	case e.IsSetColumn(i):
		return kindSet, 0
	case c.dataType == "json":
		return kindJSON, 0
	case c.charset == "binary":
		return kindBytes, 0
	}
	return kindText, 0
}

func (r *reader) rows(ctx context.Context, e *replication.RowsEvent, t replication.EventType) error {
	m, ok := r.maps[e.TableID]
	if !ok {
		return fmt.Errorf("rows for table id %d arrived before its table map", e.TableID)
	}
	if m.table == nil {
		return nil
	}
	if len(e.SkippedColumns) > 0 && len(e.SkippedColumns[0]) > 0 {
		return fmt.Errorf("%w: table %s: the binlog carries partial rows: set binlog_row_image = FULL", sources.ErrPrerequisite, m.table.QualifiedName())
	}
	var op sources.Op
	step := 1
	switch t {
	case replication.WRITE_ROWS_EVENTv0, replication.WRITE_ROWS_EVENTv1, replication.WRITE_ROWS_EVENTv2, replication.MARIADB_WRITE_ROWS_COMPRESSED_EVENT_V1:
		op = sources.OpCreate
	case replication.DELETE_ROWS_EVENTv0, replication.DELETE_ROWS_EVENTv1, replication.DELETE_ROWS_EVENTv2, replication.MARIADB_DELETE_ROWS_COMPRESSED_EVENT_V1:
		op = sources.OpDelete
	case replication.UPDATE_ROWS_EVENTv0, replication.UPDATE_ROWS_EVENTv1, replication.UPDATE_ROWS_EVENTv2, replication.MARIADB_UPDATE_ROWS_COMPRESSED_EVENT_V1, replication.PARTIAL_UPDATE_ROWS_EVENT:
		op, step = sources.OpUpdate, 2
	default:
		return fmt.Errorf("unsupported rows event %s", t)
	}
	for i := 0; i+step <= len(e.Rows); i += step {
		var before, after []sources.Value
		var err error
		switch op {
		case sources.OpCreate:
			after, err = m.decode(e.Rows[i])
		case sources.OpDelete:
			before, err = m.decode(e.Rows[i])
		case sources.OpUpdate:
			if before, err = m.decode(e.Rows[i]); err == nil {
				after, err = m.decode(e.Rows[i+1])
			}
		}
		if err != nil {
			return fmt.Errorf("table %s: %w", m.table.QualifiedName(), err)
		}
		if op == sources.OpUpdate && keyChanged(m.table, before, after) {
			// A key change is a delete of the old key and a create of the new.
			if err := r.emit(ctx, m, sources.OpDelete, before, nil); err != nil {
				return err
			}
			if err := r.emit(ctx, m, sources.OpCreate, nil, after); err != nil {
				return err
			}
			continue
		}
		if err := r.emit(ctx, m, op, before, after); err != nil {
			return err
		}
	}
	return nil
}

func (r *reader) emit(ctx context.Context, m *tableMap, op sources.Op, before, after []sources.Value) error {
	return r.h.Change(ctx, &sources.Change{Op: op, Table: m.table, Before: before, After: after, Pos: r.tx.pos, TxID: r.tx.id, CommitTime: r.tx.time})
}

// decode turns a binlog row into values; all values share one buffer.
func (m *tableMap) decode(row []any) ([]sources.Value, error) {
	if len(row) != len(m.codecs) {
		return nil, fmt.Errorf("row has %d columns, its table map %d", len(row), len(m.codecs))
	}
	vals := make([]sources.Value, len(row))
	ends := make([]int, len(row))
	var buf []byte
	for i, v := range row {
		var err error
		if buf, err = m.codecs[i].appendValue(buf, v); err != nil {
			return nil, err
		}
		ends[i] = len(buf)
	}
	start := 0
	for i, end := range ends {
		vals[i] = buf[start:end:end]
		start = end
	}
	return vals, nil
}

func keyChanged(t *sources.Table, before, after []sources.Value) bool {
	for _, i := range t.Key {
		if string(before[i]) != string(after[i]) {
			return true
		}
	}
	return false
}
