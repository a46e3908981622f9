package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-cdc/sluice/sources"
)

// Check reports every missing prerequisite of cfg at once, each with its
// fix, without changing anything: no publication, slot or table is
// created. An empty list means sluice run can start. notes are advice
// that stops nothing: a table whose backfill would sort the rest of the
// table for every chunk, with the index that makes it linear. query is
// what the connection's transport turned out to be, nil when none was
// made; the replication connection uses the same TLS settings.
func Check(ctx context.Context, cfg Config) (problems, notes []string, query *sources.Transport) {
	cfg = cfg.withNames()
	s := &Source{cfg: cfg}
	login, err := s.login(ctx)
	if err != nil {
		return []string{sources.Plain(err)}, nil, nil
	}
	conn, err := connect(ctx, cfg, false, login)
	if err != nil {
		return []string{sources.Plain(err)}, nil, nil
	}
	defer conn.Close(context.Background())
	t := transportOf(conn, cfg)
	problems, notes = checkConn(ctx, conn, cfg)
	return problems, notes, &t
}

// checkConn is Check once connected.
func checkConn(ctx context.Context, conn *pgx.Conn, cfg Config) (problems, notes []string) {
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if err := checkWALLevel(ctx, conn); err != nil {
		add("%s", sources.Plain(err))
	}
	var user string
	var replication, super bool
	if err := conn.QueryRow(ctx, "SELECT current_user, rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&user, &replication, &super); err != nil {
		add("read the role of the login: %v", err)
	} else if !replication && !super {
		add("user %q lacks the REPLICATION attribute: ALTER ROLE %s REPLICATION", user, pgx.Identifier{user}.Sanitize())
	}
	var maxSlots, usedSlots, maxSenders int
	if err := conn.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots),
		current_setting('max_wal_senders')::int`).Scan(&maxSlots, &usedSlots, &maxSenders); err != nil {
		add("read the replication settings: %v", err)
	}
	st, err := readSlot(ctx, conn, cfg.Slot)
	switch {
	case err != nil:
		add("%s", sources.Plain(err))
	case !st.exists && usedSlots >= maxSlots:
		add("max_replication_slots is %d and all are used: raise it (ALTER SYSTEM SET max_replication_slots = %d; restart) or drop an unused slot", maxSlots, maxSlots+2)
	case st.exists && st.plugin != "pgoutput":
		add("replication slot %s uses plugin %q, sluice needs pgoutput: drop it or set source.slot to another name", cfg.Slot, st.plugin)
	case st.exists && st.walStatus == "lost":
		add("replication slot %s was invalidated (wal_status lost): sluice will record a gap and backfill (backfill.on_gap: backfill), or drop the slot", cfg.Slot)
	}
	if maxSenders < 1 {
		add("max_wal_senders is %d: raise it (ALTER SYSTEM SET max_wal_senders = 10; restart)", maxSenders)
	}

	tables, err := discoverTables(ctx, conn, cfg)
	if err != nil {
		add("%s", sources.Plain(err))
	}
	signalSchema, signalName, _ := strings.Cut(cfg.SignalTable, ".")
	for _, t := range tables {
		if t.schema == signalSchema && t.name == signalName {
			continue
		}
		var can bool
		if err := conn.QueryRow(ctx, "SELECT has_table_privilege($1, 'SELECT')", pgx.Identifier{t.schema, t.name}.Sanitize()).Scan(&can); err == nil && !can {
			add("user %q cannot SELECT %s, which backfills read: GRANT SELECT ON %s TO %s", user, t.qualified(), pgx.Identifier{t.schema, t.name}.Sanitize(), pgx.Identifier{user}.Sanitize())
		}
		// Advice, not a problem: such a backfill works, only slowly.
		switch a, err := readChunkAdvice(ctx, conn, t); {
		case err != nil:
			notes = append(notes, fmt.Sprintf("table %s: cannot tell whether an index serves backfill's chunk order: %s", t.qualified(), sources.Plain(err)))
		case a.fix != "":
			notes = append(notes, chunkNote(t, a))
		}
	}

	var pubExists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", cfg.Publication).Scan(&pubExists); err != nil {
		add("look up publication %s: %v", cfg.Publication, err)
	}
	signal := pgx.Identifier{signalSchema, signalName}.Sanitize()
	var signalExists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", signal).Scan(&signalExists); err != nil {
		add("look up the signal table %s: %v", cfg.SignalTable, err)
	}
	if !super {
		// Creating a publication, or adding a table to it, takes owning
		// the tables.
		notOwned := notOwnedTables(ctx, conn, tables)
		if !pubExists && len(notOwned) > 0 {
			add("publication %s does not exist and user %q does not own %s: as their owner run CREATE PUBLICATION %s FOR TABLE %s, %s",
				cfg.Publication, user, strings.Join(notOwned, ", "), pgx.Identifier{cfg.Publication}.Sanitize(), strings.Join(notOwned, ", "), signal)
		}
		if pubExists {
			var missing []string
			want := append(tablesOf(tables), signalSchema+"."+signalName)
			for _, qn := range want {
				var in bool
				sch, name, _ := strings.Cut(qn, ".")
				if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)",
					cfg.Publication, sch, name).Scan(&in); err == nil && !in {
					missing = append(missing, pgx.Identifier{sch, name}.Sanitize())
				}
			}
			if len(missing) > 0 {
				add("publication %s lacks %s and user %q may not add them: as the owner run ALTER PUBLICATION %s ADD TABLE %s",
					cfg.Publication, strings.Join(missing, ", "), user, pgx.Identifier{cfg.Publication}.Sanitize(), strings.Join(missing, ", "))
			}
		}
	}
	if !signalExists {
		var can bool
		if err := conn.QueryRow(ctx, "SELECT has_schema_privilege($1, 'CREATE')", signalSchema).Scan(&can); err == nil && !can {
			add("the backfill signal table %s does not exist and user %q may not create it: as its owner run CREATE TABLE %s (source text PRIMARY KEY, kind text NOT NULL, id text NOT NULL, at timestamptz NOT NULL DEFAULT now()); GRANT SELECT, INSERT, UPDATE ON %s TO %s",
				cfg.SignalTable, user, signal, signal, pgx.Identifier{user}.Sanitize())
		}
	} else {
		var can bool
		if err := conn.QueryRow(ctx, "SELECT has_table_privilege($1, 'INSERT') AND has_table_privilege($1, 'UPDATE')", signal).Scan(&can); err == nil && !can {
			add("user %q cannot write the backfill signal table %s: GRANT SELECT, INSERT, UPDATE ON %s TO %s", user, cfg.SignalTable, signal, pgx.Identifier{user}.Sanitize())
		}
	}
	return problems, notes
}

func tablesOf(infos []tableInfo) []string {
	out := make([]string, len(infos))
	for i, t := range infos {
		out[i] = t.qualified()
	}
	return out
}

// LaterTables tells whether a table created while sluice runs, that a
// pattern of source.tables matches, can join the publication: it is FOR
// ALL TABLES, or the login may ALTER PUBLICATION ... ADD TABLE, which
// takes owning both the publication and the table. The note says which,
// or names the fix.
func LaterTables(ctx context.Context, cfg Config) (ok bool, note string, err error) {
	cfg = cfg.withNames()
	s := &Source{cfg: cfg}
	login, err := s.login(ctx)
	if err != nil {
		return false, "", err
	}
	conn, err := connect(ctx, cfg, false, login)
	if err != nil {
		return false, "", err
	}
	defer conn.Close(context.Background())
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	var user string
	var super bool
	if err := conn.QueryRow(ctx, "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&user, &super); err != nil {
		return false, "", fmt.Errorf("read the role of the login: %w", err)
	}
	var all, ownsPub bool
	err = conn.QueryRow(ctx, "SELECT puballtables, pg_has_role(pubowner, 'USAGE') FROM pg_publication WHERE pubname = $1", cfg.Publication).Scan(&all, &ownsPub)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		ownsPub = true // sluice creates it, as the login
	case err != nil:
		return false, "", fmt.Errorf("look up publication %s: %w", cfg.Publication, err)
	case all:
		return true, fmt.Sprintf("publication %s is FOR ALL TABLES: tables created later are in it already", cfg.Publication), nil
	}
	if super {
		return true, fmt.Sprintf("user %q is a superuser: sluice adds tables created later to publication %s", user, cfg.Publication), nil
	}
	if !ownsPub {
		return false, fmt.Sprintf("publication %s belongs to another role, so user %q cannot add tables created later to it: as a superuser run ALTER PUBLICATION %s OWNER TO %s, or recreate it as CREATE PUBLICATION %s FOR ALL TABLES",
			cfg.Publication, user, pub, pgx.Identifier{user}.Sanitize(), pub), nil
	}
	tables, _, err := resolveTables(ctx, conn, cfg)
	if err != nil {
		return false, "", err
	}
	notOwned := notOwnedTables(ctx, conn, tables)
	fix := fmt.Sprintf("create them as %s (or as a role it is a member of: GRANT <owner> TO %s), or as a superuser use a publication FOR ALL TABLES (CREATE PUBLICATION %s FOR ALL TABLES)",
		user, pgx.Identifier{user}.Sanitize(), pub)
	if len(notOwned) > 0 {
		return false, fmt.Sprintf("user %q does not own %s, so a table created later by their owner cannot join publication %s: %s",
			user, strings.Join(notOwned, ", "), cfg.Publication, fix), nil
	}
	return true, fmt.Sprintf("user %q owns the matched tables and publication %s: a table created later joins it when %s owns it too; otherwise %s",
		user, cfg.Publication, user, fix), nil
}

// notOwnedTables lists the tables the login does not own: it may not add
// them to a publication.
func notOwnedTables(ctx context.Context, conn *pgx.Conn, tables []tableInfo) []string {
	var notOwned []string
	for _, t := range tables {
		var owns bool
		if err := conn.QueryRow(ctx, "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = $1::regclass",
			pgx.Identifier{t.schema, t.name}.Sanitize()).Scan(&owns); err == nil && !owns {
			notOwned = append(notOwned, t.qualified())
		}
	}
	return notOwned
}
