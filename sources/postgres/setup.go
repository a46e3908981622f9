package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
)

// tableInfo is what setup learns about one captured table.
type tableInfo struct {
	schema, name string
	key          []string // key columns in key order (see chooseKey)
	keyFrom      string   // where the key comes from, as sources.KeyInfo.From
	keyWhy       string   // as sources.KeyInfo.Why
	identity     byte     // relreplident: 'd' default, 'f' full, 'i' index, 'n' nothing
}

func (t tableInfo) qualified() string { return t.schema + "." + t.name }

// checkWALLevel returns ErrPrerequisite when logical decoding is off.
func checkWALLevel(ctx context.Context, conn *pgx.Conn) error {
	var level string
	if err := conn.QueryRow(ctx, "SHOW wal_level").Scan(&level); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if level != "logical" {
		return fmt.Errorf("%w: wal_level is %q, logical replication needs \"logical\": run ALTER SYSTEM SET wal_level = logical (or set it in postgresql.conf) and restart PostgreSQL",
			sources.ErrPrerequisite, level)
	}
	return nil
}

// discoverTables resolves the configured tables (or, when none are given,
// every table with a usable key in the publication's scope) and their keys.
// Every problem is reported in one error, not just the first.
func discoverTables(ctx context.Context, conn *pgx.Conn, cfg Config) ([]tableInfo, error) {
	infos, refused, err := resolveTables(ctx, conn, cfg)
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, refused
	}
	if len(infos) == 0 && !slices.ContainsFunc(cfg.Tables, sources.IsTablePattern) {
		return nil, fmt.Errorf("no table to capture: list tables under source.tables, or give the tables of database %q primary keys", conn.Config().Database)
	}
	return infos, nil
}

// resolveTables is discoverTables that also returns the tables it could
// resolve when others are refused: refused lists every problem, wrapping
// ErrNoPrimaryKey when a table lacks a usable key. A table named in
// source.tables must exist and have a key; one that only a pattern (or
// the every-table default) finds is left out, with a warning, when it has
// none.
func resolveTables(ctx context.Context, conn *pgx.Conn, cfg Config) (infos []tableInfo, refused, err error) {
	set, err := sources.NewTableSet(cfg.Tables, cfg.Exclude)
	if err != nil {
		return nil, nil, err
	}
	var names []string
	lenient := map[string]bool{}
	switch {
	case set.Everything():
		all, scoped, err := tablesInScope(ctx, conn, cfg)
		if err != nil {
			return nil, nil, err
		}
		for _, qn := range all {
			if !set.Excluded(qn) && (!scoped || qn != cfg.SignalTable) {
				names = append(names, qn)
				lenient[qn] = scoped
			}
		}
	default:
		names = set.Listed()
		if set.HasPatterns() {
			all, err := userTables(ctx, conn)
			if err != nil {
				return nil, nil, err
			}
			for _, qn := range all {
				// The signal table is captured anyway, as sluice's own.
				if qn != cfg.SignalTable && set.Matches(qn) {
					names = append(names, qn)
					lenient[qn] = true
				} else if set.Unfit(qn) && cfg.Log != nil {
					cfg.Log.Warn(sources.UnfitWarning, "table", qn)
				}
			}
		}
	}
	var problems, noKey, skipped []string
	keyProblem := false
	for _, qn := range names {
		scoped := lenient[qn]
		schema, name, ok := strings.Cut(qn, ".")
		if !ok {
			problems = append(problems, fmt.Sprintf("source.tables: %q is not schema.table", qn))
			continue
		}
		info, k, found, err := readTable(ctx, conn, cfg, schema, name)
		if err != nil {
			return nil, nil, err
		}
		if !found {
			problems = append(problems, fmt.Sprintf("table %s does not exist (source.tables)", qn))
			continue
		}
		_, listed := cfg.Keys[qn]
		switch {
		case k.problem != "" && (listed || !scoped):
			problems = append(problems, k.problem)
			keyProblem = true
		case k.columns == nil && scoped:
			// Leaving them out is what "every table with a key" means,
			// but not silently.
			skipped = append(skipped, qn)
			if k.problem != "" {
				cfg.Log.Warn("table not captured", "table", qn, "why", k.problem)
			}
		case k.columns == nil:
			noKey = append(noKey, qn)
		default:
			infos = append(infos, info)
		}
	}
	if len(skipped) > 0 {
		cfg.Log.Warn("tables without a usable key are not captured: add a primary key, or a unique index over NOT NULL columns as the replica identity (REPLICA IDENTITY USING INDEX), or set REPLICA IDENTITY FULL and list the key under source.keys",
			"tables", strings.Join(skipped, ","))
	}
	if len(noKey) > 0 {
		keyProblem = true
		first := quoteQualified(noKey[0])
		problems = append(problems, fmt.Sprintf("%s: add one (ALTER TABLE %s ADD PRIMARY KEY (...)), or make a unique index over NOT NULL columns its replica identity (ALTER TABLE %s REPLICA IDENTITY USING INDEX ...), or set REPLICA IDENTITY FULL (ALTER TABLE %s REPLICA IDENTITY FULL) and list its key columns under source.keys",
			strings.Join(noKey, ", "), first, first, first))
	}
	switch {
	case keyProblem:
		refused = fmt.Errorf("%w: %s", sources.ErrNoPrimaryKey, strings.Join(problems, "; "))
	case len(problems) > 0:
		refused = errors.New(strings.Join(problems, "; "))
	}
	return infos, refused, nil
}

// readTable reads one table's replica identity and indexes, and the key
// chooseKey settles on; found is false when the table does not exist.
func readTable(ctx context.Context, conn *pgx.Conn, cfg Config, schema, name string) (t tableInfo, k keyChoice, found bool, err error) {
	qn := schema + "." + name
	var identity byte
	var oid uint32
	err = conn.QueryRow(ctx, `SELECT c.oid, c.relreplident::text::"char" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')`, schema, name).Scan(&oid, &identity)
	if errors.Is(err, pgx.ErrNoRows) {
		return t, k, false, nil
	}
	if err != nil {
		return t, k, false, fmt.Errorf("look up table %s: %w", qn, err)
	}
	indexes, err := readIndexes(ctx, conn, oid)
	if err != nil {
		return t, k, false, fmt.Errorf("read the keys of %s: %w", qn, err)
	}
	configured, listed := cfg.Keys[qn]
	k = chooseKey(qn, identity, indexes, configured, listed)
	return tableInfo{schema: schema, name: name, key: k.columns, keyFrom: k.from, keyWhy: k.why, identity: identity}, k, true, nil
}

// tablesInScope lists the tables of an existing publication, or else every
// user table; scoped tells the latter, where a table without a usable key
// is left out rather than refused.
func tablesInScope(ctx context.Context, conn *pgx.Conn, cfg Config) (names []string, scoped bool, err error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", cfg.Publication).Scan(&exists); err != nil {
		return nil, false, fmt.Errorf("look up publication %s: %w", cfg.Publication, err)
	}
	if exists {
		rows, err := conn.Query(ctx, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", cfg.Publication)
		if err != nil {
			return nil, false, fmt.Errorf("list tables of publication %s: %w", cfg.Publication, err)
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return names, false, err
	}
	names, err = userTables(ctx, conn)
	return names, true, err
}

// userTables lists every table outside the system schemas, as
// schema.table: what patterns are matched against. Partitions are left
// out, as the every-table default leaves them.
func userTables(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname || '.' || c.relname
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	return names, nil
}

// ensurePublication creates the publication for the tables, or adds the
// ones it is missing.
func ensurePublication(ctx context.Context, conn *pgx.Conn, pub string, tables []tableInfo) error {
	var all bool
	err := conn.QueryRow(ctx, "SELECT puballtables FROM pg_publication WHERE pubname = $1", pub).Scan(&all)
	if errors.Is(err, pgx.ErrNoRows) {
		list := make([]string, len(tables))
		for i, t := range tables {
			list[i] = pgx.Identifier{t.schema, t.name}.Sanitize()
		}
		sql := fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s", pgx.Identifier{pub}.Sanitize(), strings.Join(list, ", "))
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create publication: %w (create it as a table owner instead: %s)", err, sql)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up publication %s: %w", pub, err)
	}
	if all {
		return nil
	}
	rows, err := conn.Query(ctx, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1", pub)
	if err != nil {
		return fmt.Errorf("list tables of publication %s: %w", pub, err)
	}
	have, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("list tables of publication %s: %w", pub, err)
	}
	sort.Strings(have)
	for _, t := range tables {
		if i := sort.SearchStrings(have, t.qualified()); i < len(have) && have[i] == t.qualified() {
			continue
		}
		sql := fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s", pgx.Identifier{pub}.Sanitize(), pgx.Identifier{t.schema, t.name}.Sanitize())
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("add %s to publication %s: %w (run as a table owner: %s)", t.qualified(), pub, err, sql)
		}
	}
	return nil
}

// slotState is a replication slot as pg_replication_slots shows it.
type slotState struct {
	exists         bool
	plugin         string
	confirmedFlush pglogrepl.LSN
	walStatus      string // reserved, extended, unreserved, lost
	failover       bool   // kept by standbys (PostgreSQL 17 failover slot)
}

func readSlot(ctx context.Context, conn *pgx.Conn, slot string) (slotState, error) {
	var s slotState
	var plugin, walStatus *string
	var confirmed *string
	// failover is a column from PostgreSQL 17 on; to_jsonb reads it
	// where it exists.
	err := conn.QueryRow(ctx, `SELECT plugin, confirmed_flush_lsn::text, wal_status, coalesce((to_jsonb(s) ->> 'failover')::boolean, false)
		FROM pg_replication_slots s WHERE slot_name = $1`, slot).
		Scan(&plugin, &confirmed, &walStatus, &s.failover)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("look up replication slot %s: %w", slot, err)
	}
	s.exists = true
	if plugin != nil {
		s.plugin = *plugin
	}
	if walStatus != nil {
		s.walStatus = *walStatus
	}
	if confirmed != nil {
		if s.confirmedFlush, err = pglogrepl.ParseLSN(*confirmed); err != nil {
			return s, fmt.Errorf("slot %s: %w", slot, err)
		}
	}
	return s, nil
}

// createSlot creates the slot unless it exists, and tells where it
// captures from: its consistent point when created, else its confirmed
// position.
func createSlot(ctx context.Context, conn *pgx.Conn, slot string) (created bool, at pglogrepl.LSN, err error) {
	st, err := readSlot(ctx, conn, slot)
	if err != nil {
		return false, 0, err
	}
	if st.exists {
		return false, st.confirmedFlush, nil
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&version); err != nil {
		return false, 0, fmt.Errorf("read the server version: %w", err)
	}
	var lsn string
	if err := conn.QueryRow(ctx, createSlotSQL(version), slot).Scan(&lsn); err != nil {
		return false, 0, fmt.Errorf("create replication slot %s: %w (the user needs the REPLICATION attribute: ALTER ROLE ... REPLICATION; and max_replication_slots must have room)", slot, err)
	}
	at, err = pglogrepl.ParseLSN(lsn)
	return true, at, err
}

// failoverSlots is the first server version (server_version_num) whose
// logical slots can follow a failover to a standby.
const failoverSlots = 170000

// createSlotSQL creates the slot; from PostgreSQL 17 on as a failover slot,
// which standbys with sync_replication_slots keep, so a promoted standby
// resumes the stream with no gap and no backfill.
func createSlotSQL(version int) string {
	if version >= failoverSlots {
		return "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput', false, false, true)"
	}
	return "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')"
}

// slotFailover says whether the slot survives a failover, for sluice check.
func slotFailover(version int, failover bool) string {
	switch {
	case version < failoverSlots:
		return "the slot does not survive a failover (PostgreSQL 17 adds failover slots): a promoted standby means a recorded gap and a backfill of every table"
	case failover:
		return "failover slot: a standby with sync_replication_slots = on (and the primary's synchronized_standby_slots naming it) keeps it, so a promotion needs no backfill"
	default:
		return "the slot was created without failover, so a promoted standby will not have it: run ALTER_REPLICATION_SLOT <slot> (FAILOVER true) over a replication connection (psql \"dbname=<db> replication=database\"), or drop the slot while sluice is stopped and let sluice create it again (a gap, backfilled)"
	}
}

// ensureSlot checks that the slot can resume from the checkpoint at from;
// a slot that is gone or invalidated while a checkpoint exists means the
// log in between is lost: that is a gap, never a silent restart.
// createdAt is where New created the slot (0: it existed): a checkpoint
// before it means the slot was gone.
func ensureSlot(ctx context.Context, conn *pgx.Conn, slot string, from sources.Position, createdAt pglogrepl.LSN) error {
	s, err := readSlot(ctx, conn, slot)
	if err != nil {
		return err
	}
	if createdAt != 0 && from != "" {
		if lsn, err := pglogrepl.ParseLSN(string(from)); err == nil && lsn < createdAt {
			return fmt.Errorf("%w: replication slot %s did not exist (sluice created it anew at %s), but the checkpoint is at %s: the changes since then are gone from the log (was the slot dropped, or did the database fail over?)",
				sources.ErrLogLost, slot, createdAt, from)
		}
	}
	switch {
	case !s.exists && from == "":
		if _, err := conn.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
			return fmt.Errorf("create replication slot %s: %w (the user needs the REPLICATION attribute: ALTER ROLE ... REPLICATION; and max_replication_slots must have room)", slot, err)
		}
		return nil
	case !s.exists:
		return fmt.Errorf("%w: replication slot %s does not exist, but the checkpoint is at %s: the changes since then are gone from the log (was the slot dropped, or did the database fail over?)",
			sources.ErrLogLost, slot, from)
	case s.plugin != "pgoutput":
		return fmt.Errorf("replication slot %s uses plugin %q, sluice needs pgoutput: drop it or set source.slot to another name", slot, s.plugin)
	case s.walStatus == "lost":
		return fmt.Errorf("%w: replication slot %s was invalidated (wal_status lost): PostgreSQL removed WAL it still needed (max_slot_wal_keep_size)",
			sources.ErrLogLost, slot)
	}
	if from != "" {
		lsn, err := pglogrepl.ParseLSN(string(from))
		if err != nil {
			return fmt.Errorf("checkpoint position %q is not an LSN: %w", from, err)
		}
		if s.confirmedFlush > lsn {
			return fmt.Errorf("%w: replication slot %s is at %s, past the checkpoint at %s: the changes in between cannot be replayed (was the slot advanced by hand, or recreated?)",
				sources.ErrLogLost, slot, s.confirmedFlush, lsn)
		}
	}
	return nil
}
