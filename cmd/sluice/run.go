package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
)

func runCommand() *cobra.Command {
	var (
		configPath string
		tables     []string
		cpuProfile string
	)
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Capture changes and publish them until stopped (SIGINT/SIGTERM)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := sidecar.LoadConfig(configPath)
			if err != nil {
				return err
			}
			memoryLimit(cfg.NATS.URL == "" && cfg.NATS.Cluster != nil)
			if cpuProfile != "" {
				stopProfile, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stopProfile()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return sidecar.Run(ctx, cfg, sidecar.NewLogger(cfg.Log), sidecar.Options{Backfill: tables, Version: version})
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "sluice.yaml", "config file")
	cmd.Flags().StringSliceVar(&tables, "backfill", nil, "backfill these tables (schema.table, comma-separated) alongside streaming; an unfinished backfill of a table resumes instead of starting over")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile (go tool pprof) of the whole run to this file when sluice stops")
	return cmd
}

// startCPUProfile profiles until the returned func is called.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
