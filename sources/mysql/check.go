package mysql

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"

	"github.com/sluice-cdc/sluice/sources"
)

// Check reports every missing prerequisite of cfg at once, each with its
// fix, without changing anything (the signal table is not created). An
// empty list means sluice run can start.
func Check(ctx context.Context, cfg Config) []string {
	d, err := parseDSN(cfg.DSN)
	if err != nil {
		return []string{sources.Plain(err)}
	}
	s := &Source{cfg: cfg, dsn: d}
	if _, err := s.login(ctx); err != nil {
		return []string{sources.Plain(err)}
	}
	conn, err := connect(ctx, s.dsn)
	if err != nil {
		return []string{sources.Plain(err)}
	}
	defer conn.Close()
	var problems []string
	_, server, err := serverProblems(conn, s.dsn.user, cfg.Positions)
	if err != nil {
		problems = append(problems, sources.Plain(err))
	}
	problems = append(problems, server...)
	if r, err := conn.Execute("SELECT @@binlog_order_commits"); err == nil {
		if on, _ := r.GetInt(0, 0); on != 1 {
			problems = append(problems, "binlog_order_commits is OFF: backfill watermarks need commits to become visible in binlog order: SET GLOBAL binlog_order_commits = ON (and in my.cnf)")
		}
	}
	tables, err := discoverTables(conn, cfg, s.dsn.db)
	if err != nil {
		problems = append(problems, sources.Plain(err))
	}
	signal, err := signalName(cfg.SignalTable, s.dsn.db, tables)
	if err != nil {
		return append(problems, sources.Plain(err))
	}
	ts, err := loadTable(conn, signal.db, signal.name)
	switch {
	case err != nil:
		problems = append(problems, sources.Plain(err))
	case ts == nil && !mayCreate(conn, signal.db):
		problems = append(problems, fmt.Sprintf("the backfill signal table %s does not exist and user %q may not create it: have an administrator run %s; GRANT INSERT, UPDATE ON %s TO '%s'@'%%'",
			signal, s.dsn.user, signalDDL(signal), signal.sql(), s.dsn.user))
	}
	return problems
}

// CapturedColumns lists the columns of every captured table, changing
// nothing: what sluice check shows privacy coverage against.
func CapturedColumns(ctx context.Context, cfg Config) (map[string][]string, error) {
	d, err := parseDSN(cfg.DSN)
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, dsn: d}
	if _, err := s.login(ctx); err != nil {
		return nil, err
	}
	conn, err := connect(ctx, s.dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tables, err := discoverTables(conn, cfg, s.dsn.db)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]string, len(tables))
	for _, t := range tables {
		for _, c := range t.columns {
			out[t.qualified()] = append(out[t.qualified()], c.name)
		}
	}
	return out, nil
}

// mayCreate tells whether the login may create tables in db, by its
// grants (ALL or CREATE on *.* or on db.*).
func mayCreate(conn *client.Conn, db string) bool {
	r, err := conn.Execute("SHOW GRANTS")
	if err != nil {
		return true // cannot tell: sluice run will say
	}
	for i := range r.RowNumber() {
		g, _ := r.GetString(i, 0)
		g = strings.ToUpper(g)
		at := strings.Index(g, " ON ")
		if at < 0 {
			continue // a role grant
		}
		on := g[at+4:]
		if !strings.HasPrefix(on, "*.*") && !strings.HasPrefix(on, "`"+strings.ToUpper(db)+"`.*") {
			continue
		}
		privs := g[:at]
		if strings.Contains(privs, "ALL PRIVILEGES") || strings.Contains(privs, "CREATE,") || strings.HasSuffix(privs, "CREATE") || strings.Contains(privs, " CREATE,") {
			return true
		}
	}
	return false
}

// Keys tells, changing nothing, which key each captured table's events
// carry and why: what sluice check shows. Tables without a usable key are
// left out; Check names them with the fix.
func Keys(ctx context.Context, cfg Config) ([]sources.KeyInfo, error) {
	d, err := parseDSN(cfg.DSN)
	if err != nil {
		return nil, err
	}
	s := &Source{cfg: cfg, dsn: d}
	if _, err := s.login(ctx); err != nil {
		return nil, err
	}
	conn, err := connect(ctx, s.dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	tables, _, err := resolveTables(conn, cfg, s.dsn.db)
	if err != nil {
		return nil, err
	}
	signal, err := signalName(cfg.SignalTable, s.dsn.db, tables)
	if err != nil {
		return nil, err
	}
	out := make([]sources.KeyInfo, 0, len(tables))
	for _, t := range tables {
		if t.db == signal.db && t.name == signal.name {
			continue
		}
		out = append(out, sources.KeyInfo{Table: t.qualified(), Columns: t.key, From: t.keyFrom, Why: t.keyWhy})
	}
	slices.SortFunc(out, func(a, b sources.KeyInfo) int { return cmp.Compare(a.Table, b.Table) })
	return out, nil
}
