// Package postgres is the PostgreSQL source: logical replication with the
// pgoutput plugin, read with pglogrepl.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/sluice-cdc/sluice/sources"
)

// Config configures a PostgreSQL source.
type Config struct {
	Name string // source name; slot and publication names derive from it
	DSN  string
	// Tables are schema.table names or patterns (sources.TableSet);
	// empty = every table with a key (the publication's, if it exists).
	Tables []string
	// Exclude removes the tables its names or patterns match.
	Exclude []string
	// Keys gives the key columns of tables without a primary key, which must
	// have REPLICA IDENTITY FULL.
	Keys        map[string][]string
	Slot        string // default sluice_<name>
	Publication string // default sluice_<name>
	// SignalTable is schema.table of the backfill watermarks; sluice
	// creates it and adds it to the publication. Default public.sluice_signal.
	SignalTable string
	// Heartbeat: while no captured table changes for this long, sluice
	// writes a heartbeat row to the signal table, so the slot's position
	// moves on and an idle database does not keep its WAL. Default 1m.
	Heartbeat time.Duration
	// MaxRetainedWAL: a slot holding more WAL than this (bytes) is logged
	// as a warning. Default 1 GiB.
	MaxRetainedWAL int64
	// StatusInterval is how often the acknowledged position is reported to
	// the server (and the longest it waits to learn of a dead peer).
	StatusInterval time.Duration
	// Credentials, when set, supply the user and password on every
	// connect; the DSN's own are ignored.
	Credentials sources.Credentials
	// TLS is source.tls. Unset, the DSN's sslmode and its companions rule
	// (libpq's default, prefer, may end in plaintext); set, it applies to
	// every connection and the DSN must not set TLS too.
	TLS sources.TLS
	// OnTableAdded, when set, is told of a table that a pattern of Tables
	// matched while sluice runs, once it is captured: its changes from
	// then on are in the stream, its earlier rows are not (a backfill's).
	// It must not block.
	OnTableAdded func(table string)
	Log          *slog.Logger
}

// sessionSettings fix the text form of values that pgoutput sends, so the
// decoders see one format whatever the server's defaults are.
var sessionSettings = map[string]string{
	"DateStyle":          "ISO, MDY",
	"TimeZone":           "UTC",
	"IntervalStyle":      "iso_8601",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
}

// Source reads one database's logical replication slot.
type Source struct {
	cfg  Config
	conn *pgx.Conn // catalog queries; the replication connection is per Stream
	// tables are the captured tables, the signal table included. The
	// stream, the backfill runner and watchTables use them at once.
	tablesMu sync.RWMutex
	tables   map[string]tableInfo
	// tablesGen counts changes of tables: a relation decoded while its
	// table was not captured is decoded again once it may be.
	tablesGen atomic.Uint64
	set       sources.TableSet
	// warned: tables watchTables found and could not capture, told once.
	warned map[string]bool
	db     string
	acked  atomic.Uint64 // LSN every change before which is stored
	// lastCommit is when the stream last saw a commit (unix nanos), and
	// retained the WAL bytes the slot holds, as the heartbeat last read.
	lastCommit atomic.Int64
	retained   atomic.Int64
	// signal is the watermark table; it is captured but not a user table.
	signal tableInfo

	shapeMu sync.Mutex
	shapes  map[string]*sources.Table

	// The backfill runner reads chunks and writes watermarks on a
	// connection of its own, while Stream runs.
	backfillMu   sync.Mutex
	backfillConn *pgx.Conn
	keyTypes     map[string][]uint32
	columns      map[string][]string // column names per table, for filters
	// host is the server the replication stream last came from.
	host string
	// slotCreated is where New created the slot (0: it existed), until
	// the first Stream has checked the checkpoint against it.
	slotCreated pglogrepl.LSN
	// unfitWarned holds the tables a pattern matches whose names cannot be
	// subject tokens, once warned about (guarded by backfillMu).
	unfitWarned map[string]bool
	// builtin names built-in types without a catalog round trip.
	builtin *pgtype.Map
}

// SlotName derives a valid slot or publication name from a source name.
func SlotName(source string) string {
	var b strings.Builder
	b.WriteString("sluice_")
	for _, r := range strings.ToLower(source) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// withNames fills in the default slot, publication and signal table.
func (cfg Config) withNames() Config {
	if cfg.Slot == "" {
		cfg.Slot = SlotName(cfg.Name)
	}
	if cfg.Publication == "" {
		cfg.Publication = SlotName(cfg.Name)
	}
	if cfg.SignalTable == "" {
		cfg.SignalTable = defaultSignalTable
	}
	return cfg
}

// New connects, checks the prerequisites and prepares the publication and
// the replication slot.
func New(ctx context.Context, cfg Config) (*Source, error) {
	cfg = cfg.withNames()
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = defaultHeartbeat
	}
	if cfg.MaxRetainedWAL <= 0 {
		cfg.MaxRetainedWAL = defaultMaxRetainedWAL
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = defaultStatusInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, shapes: make(map[string]*sources.Table), builtin: pgtype.NewMap(), keyTypes: make(map[string][]uint32), columns: make(map[string][]string),
		warned: make(map[string]bool), unfitWarned: make(map[string]bool)}
	var err error
	if s.set, err = sources.NewTableSet(cfg.Tables, cfg.Exclude); err != nil {
		return nil, err
	}
	login, err := s.login(ctx)
	if err != nil {
		return nil, err
	}
	if s.conn, err = connect(ctx, cfg, false, login); err != nil {
		return nil, err
	}
	s.db = s.conn.Config().Database
	if err := s.setup(ctx); err != nil {
		s.conn.Close(context.Background())
		return nil, err
	}
	return s, nil
}

func (s *Source) setup(ctx context.Context) (err error) {
	if err := checkWALLevel(ctx, s.conn); err != nil {
		return err
	}
	if s.signal, err = ensureSignalTable(ctx, s.conn, s.cfg.SignalTable); err != nil {
		return err
	}
	tables, err := discoverTables(ctx, s.conn, s.cfg)
	if err != nil {
		return err
	}
	tables = slices.DeleteFunc(tables, func(t tableInfo) bool { return t.qualified() == s.signal.qualified() })
	if len(tables) == 0 && !s.set.HasPatterns() {
		return fmt.Errorf("no table to capture: list tables under source.tables, or give the tables of database %q primary keys", s.conn.Config().Database)
	}
	if err := ensurePublication(ctx, s.conn, s.cfg.Publication, append(slices.Clip(tables), s.signal)); err != nil {
		return err
	}
	s.tables = make(map[string]tableInfo, len(tables)+1)
	names := make([]string, 0, len(tables))
	for _, t := range tables {
		s.tables[t.qualified()] = t
		names = append(names, t.qualified())
	}
	s.tables[s.signal.qualified()] = s.signal
	if len(names) == 0 {
		s.cfg.Log.Warn("no table matches source.tables yet: tables created later that match are captured", "tables", strings.Join(s.cfg.Tables, ","))
	}
	s.cfg.Log.Info("capturing tables", "tables", strings.Join(names, ","), "slot", s.cfg.Slot, "publication", s.cfg.Publication)
	// The capture point is fixed before anything else waits (NATS, a
	// cluster forming): from the slot's creation PostgreSQL keeps every
	// change for sluice, so a first start misses nothing committed after
	// this line.
	created, at, err := createSlot(ctx, s.conn, s.cfg.Slot)
	if err != nil {
		return classify(err)
	}
	if created {
		s.slotCreated = at
		s.cfg.Log.Info("replication slot created: capturing from "+at.String(), "slot", s.cfg.Slot, "position", at.String())
	} else {
		s.cfg.Log.Info("replication slot exists: capturing from the checkpoint, or from the slot's position "+at.String()+" on a first start", "slot", s.cfg.Slot, "position", at.String())
	}
	return nil
}

// Database is the database name, for the event's source.db.
func (s *Source) Database() string { return s.db }

// Start is "": the replication slot keeps the position of a first start.
func (s *Source) Start() sources.Position { return "" }

// login asks the credentials source, if any, for the login to use now.
func (s *Source) login(ctx context.Context) (*sources.Login, error) {
	if s.cfg.Credentials == nil {
		return nil, nil
	}
	l, err := s.cfg.Credentials.Login(ctx)
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// connect opens a catalog or replication connection, with an error that
// names the server but never the password. A login overrides the DSN's user
// and password.
func connect(ctx context.Context, c Config, replication bool, login *sources.Login) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("source.dsn is not a valid PostgreSQL connection string: %w", redact(err, c.DSN))
	}
	if err := applyTLS(&cfg.Config, c); err != nil {
		return nil, err
	}
	if login != nil {
		cfg.User, cfg.Password = login.User, login.Password
	}
	for k, v := range sessionSettings {
		cfg.RuntimeParams[k] = v
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = "sluice"
	}
	if replication {
		cfg.RuntimeParams["replication"] = "database"
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		server := fmt.Sprintf("PostgreSQL at %s:%d", cfg.Host, cfg.Port)
		var pgErr *pgconn.PgError
		switch {
		case sources.IsTLSFailure(err):
			return nil, sources.TLSError(redact(err, c.DSN), server)
		case strings.Contains(err.Error(), "server refused TLS connection"):
			return nil, fmt.Errorf("%w: %s offers no TLS but source.tls.mode is %s: enable it on the server (ssl = on), or set source.tls.mode: disable",
				sources.ErrTLS, server, tlsMode(c))
		case errors.As(err, &pgErr) && pgErr.Code == "28P01":
			return nil, fmt.Errorf("%w: %s refused user %q: wrong password or user (check source.dsn or the credentials source)",
				sources.ErrLoginRejected, server, cfg.User)
		case errors.As(err, &pgErr) && pgErr.Code == "28000" && strings.Contains(pgErr.Message, "no encryption"):
			// pg_hba.conf has hostssl lines only: the server names the cause.
			return nil, fmt.Errorf("%w: %s refused a plaintext connection (pg_hba.conf allows only TLS): set source.tls.mode: verify-full (with source.tls.ca for a private CA)",
				sources.ErrTLS, server)
		}
		return nil, fmt.Errorf("%w: cannot connect to %s as %q: %w (is the server running and source.dsn right?)",
			sources.ErrDisconnected, server, cfg.User, redact(err, c.DSN))
	}
	return conn, nil
}

// redact removes the DSN from an error message: it may carry a password.
func redact(err error, dsn string) error {
	if dsn == "" || !strings.Contains(err.Error(), dsn) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), dsn, "<dsn>"))
}

// Ack records that everything up to pos is stored downstream.
func (s *Source) Ack(pos sources.Position) {
	lsn, err := pglogrepl.ParseLSN(string(pos))
	if err != nil {
		// Only this source makes positions, so this is a bug, not bad
		// input; the slot then keeps its WAL, which the retained-WAL
		// metric and limit show.
		s.cfg.Log.Error("acknowledged position is not an LSN: the slot's confirmed position does not move", "position", string(pos), "error", err)
		return
	}
	for {
		cur := s.acked.Load()
		if uint64(lsn) <= cur || s.acked.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

// Close releases the catalog connection.
func (s *Source) Close(ctx context.Context) error {
	s.backfillMu.Lock()
	if s.backfillConn != nil {
		s.backfillConn.Close(ctx)
	}
	s.backfillMu.Unlock()
	return s.conn.Close(ctx)
}

// Stream reads the slot from `from` and hands changes to h.
func (s *Source) Stream(ctx context.Context, from sources.Position, h sources.Handler) error {
	login, err := s.login(ctx)
	if err != nil {
		return err
	}
	if s.conn.IsClosed() || login != nil && login.User != s.conn.Config().User {
		s.conn.Close(context.Background())
		conn, err := connect(ctx, s.cfg, false, login)
		if err != nil {
			return sources.RetryRejected(s.cfg.Credentials, login, err)
		}
		s.conn = conn
	}
	createdAt := s.slotCreated
	s.slotCreated = 0 // told once: the slot has a history from now on
	if err := ensureSlot(ctx, s.conn, s.cfg.Slot, from, createdAt); err != nil {
		return classify(err)
	}
	var start pglogrepl.LSN
	if from != "" {
		lsn, err := pglogrepl.ParseLSN(string(from))
		if err != nil {
			return fmt.Errorf("checkpoint position %q is not an LSN: %w", from, err)
		}
		start = lsn
		s.Ack(from)
	}
	rconn, err := connect(ctx, s.cfg, true, login)
	if err != nil {
		return sources.RetryRejected(s.cfg.Credentials, login, err)
	}
	defer rconn.Close(context.Background())
	pc := rconn.PgConn()
	// With several hosts in the DSN a reconnect may land on another
	// server (a promoted standby): say so once.
	if host := pc.Conn().RemoteAddr().String(); host != s.host {
		if s.host != "" {
			s.cfg.Log.Warn("source host changed", "from", s.host, "to", host)
		}
		s.host = host
	}
	err = pglogrepl.StartReplication(ctx, pc, s.cfg.Slot, start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names '" + s.cfg.Publication + "'"},
	})
	if err != nil {
		return classify(fmt.Errorf("start replication on slot %s: %w", s.cfg.Slot, err))
	}
	s.cfg.Log.Info("streaming", "slot", s.cfg.Slot, "from", start, "tls", transportOf(rconn, s.cfg).String())
	sources.Opened(h)
	sctx, expired, stop := login.UntilExpiring(ctx)
	defer stop()
	// The heartbeat and the table watcher live as long as this call: both
	// use the source's connections, which must be idle once it returns.
	hctx, stopHeartbeat := context.WithCancel(sctx)
	var side sync.WaitGroup
	side.Go(func() { s.heartbeat(hctx) })
	side.Go(func() { s.watchTables(hctx) })
	defer side.Wait()
	defer stopHeartbeat()
	r := &reader{s: s, h: h, relations: make(map[uint32]*relation)}
	err = r.loop(sctx, pc)
	switch {
	case ctx.Err() != nil:
		// Best effort: tell the server how far we got before hanging up.
		_ = s.sendStatus(context.Background(), pc)
		return ctx.Err()
	case expired():
		_ = s.sendStatus(context.Background(), pc)
		return sources.ErrLoginExpiring
	}
	return classify(err)
}

func (s *Source) sendStatus(ctx context.Context, pc *pgconn.PgConn) error {
	lsn := pglogrepl.LSN(s.acked.Load())
	return pglogrepl.SendStandbyStatusUpdate(ctx, pc, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: lsn, WALFlushPosition: lsn, WALApplyPosition: lsn,
	})
}

// classify marks connection-level failures as transient: the pipeline
// reconnects and resumes after them. Everything else is final.
func classify(err error) error {
	if err == nil || errors.Is(err, sources.ErrDisconnected) || errors.Is(err, sources.ErrLogLost) {
		return err
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", // shutdown, crash, starting up
			pgErr.Code == "55006": // slot still held by the previous, dying walsender
			return fmt.Errorf("%w: %w", sources.ErrDisconnected, err)
		}
		return err
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%w: %w", sources.ErrDisconnected, err)
	}
	return err
}

// reader is the state of one replication stream.
type reader struct {
	s         *Source
	h         sources.Handler
	relations map[uint32]*relation
	tx        struct {
		pos  sources.Position
		xid  uint32
		time time.Time
	}
}

func (r *reader) loop(ctx context.Context, pc *pgconn.PgConn) error {
	// Messages are received without a context: pgconn watches a context
	// per call, an allocation and a goroutine handoff per message (7% of a
	// catch-up's allocated bytes). The status interval is a read deadline
	// on the connection instead, and the end of ctx cuts the read short
	// the same way.
	conn := pc.Conn()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer func() {
		if stop() {
			_ = conn.SetReadDeadline(time.Time{})
		}
	}()
	nextStatus := time.Now()
	for {
		if time.Now().After(nextStatus) {
			if err := r.s.sendStatus(ctx, pc); err != nil {
				return fmt.Errorf("send standby status: %w", err)
			}
			nextStatus = time.Now().Add(r.s.cfg.StatusInterval)
			if err := conn.SetReadDeadline(nextStatus); err != nil {
				return fmt.Errorf("%w: %w", sources.ErrDisconnected, err)
			}
			// After the deadline is set: a cancel that came before it
			// would otherwise be overwritten and wait for the deadline.
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		msg, err := pc.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				if err := ctx.Err(); err != nil {
					return err
				}
				continue
			}
			return err
		}
		switch msg := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.copyData(ctx, pc, msg.Data, &nextStatus); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(msg)
		case *pgproto3.CopyDone, *pgproto3.CommandComplete:
			// The walsender ended the stream, as it does when the server
			// shuts down: reconnect and resume.
			return fmt.Errorf("%w: the server ended the replication stream", sources.ErrDisconnected)
		default:
			return fmt.Errorf("unexpected replication message %T", msg)
		}
	}
}

func (r *reader) copyData(ctx context.Context, pc *pgconn.PgConn, data []byte, nextStatus *time.Time) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("parse keepalive: %w", err)
		}
		if ka.ReplyRequested {
			*nextStatus = time.Time{}
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("parse XLogData: %w", err)
		}
		return r.message(ctx, xld.WALData)
	}
	return nil
}

func (r *reader) message(ctx context.Context, data []byte) error {
	m, err := pglogrepl.Parse(data)
	if err != nil {
		return fmt.Errorf("decode pgoutput message: %w", err)
	}
	switch m := m.(type) {
	case *pglogrepl.RelationMessage:
		rel, err := r.s.relation(ctx, m)
		if err != nil {
			return err
		}
		r.relations[m.RelationID] = rel
	case *pglogrepl.BeginMessage:
		r.tx.pos, r.tx.xid, r.tx.time = sources.Position(m.FinalLSN.String()), m.Xid, m.CommitTime
	case *pglogrepl.CommitMessage:
		r.s.lastCommit.Store(time.Now().UnixNano())
		return r.h.Commit(ctx, sources.Commit{Pos: sources.Position(m.TransactionEndLSN.String()), Time: m.CommitTime})
	case *pglogrepl.InsertMessage:
		rel, err := r.rel(ctx, m.RelationID)
		if err != nil || rel.table == nil {
			return err
		}
		after, err := rel.decode(m.Tuple, nil, false)
		if err != nil {
			return err
		}
		return r.emit(ctx, rel, sources.OpCreate, nil, after)
	case *pglogrepl.UpdateMessage:
		return r.update(ctx, m)
	case *pglogrepl.DeleteMessage:
		rel, err := r.rel(ctx, m.RelationID)
		if err != nil || rel.table == nil {
			return err
		}
		before, err := rel.decode(m.OldTuple, nil, m.OldTupleType == pglogrepl.DeleteMessageTupleTypeKey)
		if err != nil {
			return err
		}
		return r.emit(ctx, rel, sources.OpDelete, before, nil)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			rel, err := r.rel(ctx, id)
			if err != nil {
				return err
			}
			if rel.table == nil {
				continue
			}
			if err := r.emit(ctx, rel, sources.OpTruncate, nil, nil); err != nil {
				return err
			}
		}
	}
	// Type and Origin messages need nothing: types are looked up in the
	// catalog when a relation uses them.
	return nil
}

func (r *reader) rel(ctx context.Context, id uint32) (*relation, error) {
	rel, ok := r.relations[id]
	if !ok {
		return nil, fmt.Errorf("pgoutput sent a change for relation %d before describing it", id)
	}
	if rel.table == nil && rel.gen != r.s.tablesGen.Load() {
		// pgoutput describes a relation once per stream: a table that
		// joined since (FOR ALL TABLES publishes it from its creation)
		// is decoded from the description it sent.
		fresh, err := r.s.relation(ctx, rel.msg)
		if err != nil {
			return nil, err
		}
		r.relations[id] = fresh
		rel = fresh
	}
	return rel, nil
}

// update emits an update, or, when the key changed, a delete of the old key
// and a create of the new one (they may land in different partitions).
func (r *reader) update(ctx context.Context, m *pglogrepl.UpdateMessage) error {
	rel, err := r.rel(ctx, m.RelationID)
	if err != nil || rel.table == nil {
		return err
	}
	var before []sources.Value
	if m.OldTuple != nil {
		before, err = rel.decode(m.OldTuple, nil, m.OldTupleType == pglogrepl.UpdateMessageTupleTypeKey)
		if err != nil {
			return err
		}
	}
	after, err := rel.decode(m.NewTuple, before, false)
	if err != nil {
		return err
	}
	if before != nil && keyChanged(rel.table, before, after) {
		if err := r.emit(ctx, rel, sources.OpDelete, before, nil); err != nil {
			return err
		}
		return r.emit(ctx, rel, sources.OpCreate, nil, after)
	}
	return r.emit(ctx, rel, sources.OpUpdate, before, after)
}

func keyChanged(t *sources.Table, before, after []sources.Value) bool {
	for _, i := range t.Key {
		if before[i] == nil || after[i] == nil {
			continue
		}
		if string(before[i]) != string(after[i]) {
			return true
		}
	}
	return false
}

func (r *reader) emit(ctx context.Context, rel *relation, op sources.Op, before, after []sources.Value) error {
	return r.h.Change(ctx, &sources.Change{
		Op:         op,
		Table:      rel.table,
		Before:     before,
		After:      after,
		Pos:        r.tx.pos,
		TxID:       uint64(r.tx.xid),
		CommitTime: r.tx.time,
	})
}

// heartbeat keeps an idle slot moving: PostgreSQL sends nothing for
// transactions that touch no captured table, so without a commit of its
// own the slot's position would stay put while the WAL grows. It also
// watches how much WAL the slot holds.
func (s *Source) heartbeat(ctx context.Context) {
	s.lastCommit.Store(time.Now().UnixNano())
	t := time.NewTicker(s.cfg.Heartbeat)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastCommit.Load())) >= s.cfg.Heartbeat {
			if err := s.WriteSignal(ctx, "heartbeat", ""); err != nil && ctx.Err() == nil {
				s.cfg.Log.Warn("heartbeat not written; the slot may hold WAL until a captured table changes", "error", err)
			}
		}
		n, err := s.retainedWAL(ctx)
		if err != nil {
			continue
		}
		s.retained.Store(n)
		if n > s.cfg.MaxRetainedWAL && !warned {
			s.cfg.Log.Warn("the replication slot holds a lot of WAL: sluice is behind, or stopped consumers of the slot's position; check sluice status and the database's disk",
				"slot", s.cfg.Slot, "retained_bytes", n, "threshold", s.cfg.MaxRetainedWAL)
		}
		warned = n > s.cfg.MaxRetainedWAL
	}
}

func (s *Source) retainedWAL(ctx context.Context) (int64, error) {
	s.backfillMu.Lock()
	defer s.backfillMu.Unlock()
	conn, err := s.backfillConnLocked(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	err = conn.QueryRow(ctx, `SELECT COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn), 0)::bigint FROM pg_replication_slots WHERE slot_name = $1`, s.cfg.Slot).Scan(&n)
	if err != nil {
		return 0, s.dropBackfillConnLocked(err)
	}
	return n, nil
}

// RetainedBytes is the WAL the slot holds, as last measured: how far the
// slot's position is behind the server's.
func (s *Source) RetainedBytes() int64 { return s.retained.Load() }
