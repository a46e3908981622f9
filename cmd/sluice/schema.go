package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sluice-cdc/sluice/schemas"
)

func schemaCommand() *cobra.Command {
	var (
		configPath string
		version    int
		shape      bool
		conn       natsClient
	)
	cmd := &cobra.Command{
		Use:   "schema --config FILE TABLE [--version N]",
		Short: "Print the JSON Schema of a table's events, at its latest or a given version",
		Long: "Print the JSON Schema of the rows (\"before\", \"after\") of TABLE's events (schema.table; MySQL database.table)\n" +
			"at its latest registered shape, or at --version N, as sluice run registered it in the checkpoint bucket.",
		Example: "  sluice schema --config sluice.yaml public.orders\n  sluice schema -c sluice.yaml public.orders --version 2 --shape",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := sidecar.LoadConfig(configPath)
			if err != nil {
				return err
			}
			return printSchema(cmd.Context(), cmd.OutOrStdout(), cfg, conn, args[0], version, shape)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "sluice.yaml", "config file of the sluice that captures the table")
	cmd.Flags().IntVar(&version, "version", 0, "schema version (default: the latest)")
	cmd.Flags().BoolVar(&shape, "shape", false, "print the registered shape (columns, types, key) instead of the JSON Schema")
	controlFlags(cmd, &conn)
	return cmd
}

func printSchema(ctx context.Context, w io.Writer, cfg sidecar.Config, conn natsClient, table string, version int, shape bool) error {
	nc, _, store, err := openControlStore(ctx, cfg, conn, "sluice-schema")
	if err != nil {
		return err
	}
	defer nc.Close()
	shapes, err := schemas.LoadShapes(ctx, store, cfg.Source.Name, table)
	if err != nil {
		return err
	}
	if len(shapes) == 0 {
		return fmt.Errorf("no shape of %s is registered for source %s: is it captured (schema.table), and has sluice run seen a change of it?", table, cfg.Source.Name)
	}
	s := shapes[len(shapes)-1]
	if version != 0 {
		if version < 1 || version > len(shapes) {
			return fmt.Errorf("%s has versions 1 to %d, not %d", table, len(shapes), version)
		}
		s = shapes[version-1]
	}
	var out any = s
	if !shape {
		// A shape registered before kinds existed has none: the driver
		// reads them from its types, as it does for a new shape.
		if d := cfg.Source.Driver(); d != nil {
			s = s.WithKinds(d.KindOf)
		}
		out = s.JSONSchema()
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, strings.TrimSpace(string(b)))
	return err
}
