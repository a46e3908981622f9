package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/credentials"
	"github.com/sluice-cdc/sluice/sources/mysql"
	"github.com/sluice-cdc/sluice/sources/postgres"
)

// capturedTables reads each captured table's key and columns, changing
// nothing; nil when the source cannot be read (its check says why).
func capturedTables(ctx context.Context, cfg Config, vault *credentials.Vault) sources.Catalog {
	var tables sources.Catalog
	var err error
	quiet := slog.New(slog.DiscardHandler)
	if cfg.Source.Kind == "mysql" {
		tables, err = mysql.Captured(ctx, mysqlConfig(cfg.Source, cfg.Backfill.SignalTable, credsOf(vault), quiet))
	} else {
		tables, err = postgres.Captured(ctx, postgresConfig(cfg.Source, cfg.Backfill.SignalTable, credsOf(vault), quiet))
	}
	if err != nil {
		return sources.Catalog{}
	}
	return tables
}

// printKeys prints the key each captured table's events carry and why it
// was chosen: a unique index or source.keys partitions events as surely
// as a primary key, and the operator should see which one before the
// first event.
func printKeys(w io.Writer, cat sources.Catalog) {
	for _, t := range cat.Tables {
		fmt.Fprintf(w, "      key of %s: %s\n", t.Key.Table, t.Key)
	}
	for _, n := range cat.Notes {
		fmt.Fprintf(w, "      %s\n", n)
	}
}

// printResolved prints what source.tables and source.exclude resolve to
// now: a pattern takes in tables by their names, and the operator should
// see which before they stream.
func printResolved(w io.Writer, tables []sources.CapturedTable) {
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Key.Table
	}
	list := strings.Join(names, ", ")
	if list == "" {
		list = "no table"
	}
	fmt.Fprintf(w, "      source.tables resolve to: %s\n", list)
}
