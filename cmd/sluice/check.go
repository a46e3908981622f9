package main

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
)

func checkCommand() *cobra.Command {
	var configPath string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Preflight: report every missing prerequisite at once, each with its fix",
		Long: "sidecar.Check the configuration, Vault, the database (log settings, slots, privileges, keys, replica identity,\n" +
			"publication, signal table) and the NATS store without changing anything. Exits non-zero when\n" +
			"anything would stop sluice run.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			return sidecar.Check(ctx, cmd.OutOrStdout(), configPath)
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "sluice.yaml", "config file")
	return cmd
}
