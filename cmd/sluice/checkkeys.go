package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/credentials"
	"github.com/sluice-cdc/sluice/sources/mysql"
	"github.com/sluice-cdc/sluice/sources/postgres"
)

// checkKeys prints the key each captured table's events carry and why it
// was chosen: a unique index or source.keys partitions events as surely
// as a primary key, and the operator should see which one before the
// first event.
func checkKeys(ctx context.Context, w io.Writer, cfg Config, vault *credentials.Vault) {
	var keys []sources.KeyInfo
	var err error
	if cfg.Source.Kind == "mysql" {
		keys, err = mysql.Keys(ctx, mysql.Config{
			Name: cfg.Source.Name, DSN: cfg.Source.DSN, Tables: cfg.Source.Tables, Keys: cfg.Source.Keys,
			SignalTable: cfg.Backfill.SignalTable, Credentials: credsOf(vault),
		})
	} else {
		keys, err = postgres.Keys(ctx, postgres.Config{
			Name: cfg.Source.Name, DSN: cfg.Source.DSN, Tables: cfg.Source.Tables, Keys: cfg.Source.Keys,
			SignalTable: cfg.Backfill.SignalTable, Credentials: credsOf(vault), Log: slog.New(slog.DiscardHandler),
		})
	}
	if err != nil {
		return // the source's own check has said why
	}
	for _, k := range keys {
		fmt.Fprintf(w, "      key of %s: %s\n", k.Table, k)
	}
}
