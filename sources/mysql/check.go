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
// empty list means sluice run can start. query is what the query
// connection's transport turned out to be, nil when none was made; the
// binlog connection uses the same TLS settings.
func Check(ctx context.Context, cfg Config) (problems []string, query *sources.Transport) {
	d, err := parseConfig(cfg)
	if err != nil {
		return []string{sources.Plain(err)}, nil
	}
	s := &Source{cfg: cfg, dsn: d}
	if _, err := s.login(ctx); err != nil {
		return []string{sources.Plain(err)}, nil
	}
	conn, d, err := connectPrimary(ctx, s.dsn, hostPort{})
	if err != nil {
		return []string{sources.Plain(err)}, nil
	}
	s.dsn = d
	defer conn.Close()
	t := transportOf(conn, s.dsn)
	return checkConn(conn, cfg, s.dsn), &t
}

// checkConn is Check once connected, as d (with the login's user).
func checkConn(conn *client.Conn, cfg Config, d dsn) []string {
	s := &Source{cfg: cfg, dsn: d}
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

// Captured tells, changing nothing, which key each captured table's
// events carry and why, and its columns: what sluice check shows. Tables
// without a usable key are left out; Check names them with the fix.
func Captured(ctx context.Context, cfg Config) (sources.Catalog, error) {
	var cat sources.Catalog
	d, err := parseConfig(cfg)
	if err != nil {
		return cat, err
	}
	s := &Source{cfg: cfg, dsn: d}
	if _, err := s.login(ctx); err != nil {
		return cat, err
	}
	conn, _, err := connectPrimary(ctx, s.dsn, hostPort{})
	if err != nil {
		return cat, err
	}
	defer conn.Close()
	tables, _, err := resolveTables(conn, cfg, s.dsn.db)
	if err != nil {
		return cat, err
	}
	signal, err := signalName(cfg.SignalTable, s.dsn.db, tables)
	if err != nil {
		return cat, err
	}
	out := make([]sources.CapturedTable, 0, len(tables))
	for _, t := range tables {
		if t.db == signal.db && t.name == signal.name {
			continue
		}
		c := sources.CapturedTable{Key: sources.KeyInfo{Table: t.qualified(), Columns: t.key, From: t.keyFrom, Why: t.keyWhy}}
		for _, col := range t.columns {
			c.Columns = append(c.Columns, col.name)
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b sources.CapturedTable) int { return cmp.Compare(a.Key.Table, b.Key.Table) })
	cat.Tables = out
	return cat, nil
}
