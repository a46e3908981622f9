package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/sink"
)

// Status is what sluice status reports (its --json form).
type Status struct {
	Source     string          `json:"source"`
	Stream     string          `json:"stream"`
	Messages   uint64          `json:"messages"`
	Bytes      uint64          `json:"bytes"`
	Partitions []uint64        `json:"partitions"` // messages per partition
	Checkpoint *StatusPosition `json:"checkpoint"` // nil before the first one
	Gaps       []backfill.Gap  `json:"gaps"`
	Backfills  []backfill.Job  `json:"backfills"`
	// Consumers are the stream's durable consumers and how far behind.
	Consumers []sink.ConsumerLag `json:"consumers"`
	Other     map[string]int64   `json:"other_subjects,omitempty"` // _schema, _dlq
}

// StatusPosition is the checkpoint as status shows it.
type StatusPosition struct {
	Position  string    `json:"position"`
	StreamSeq uint64    `json:"stream_seq"`
	LastEvent time.Time `json:"last_event"`
	// LagSeconds is how old the last stored transaction is: while the
	// database is busy, how far behind sluice's checkpoint is.
	LagSeconds float64   `json:"lag_seconds"`
	Written    time.Time `json:"written"`
}

func statusCommand() *cobra.Command {
	var (
		configPath string
		asJSON     bool
		conn       natsClient
	)
	cmd := &cobra.Command{
		Use:   "status --config FILE [--json]",
		Short: "Show a source's checkpoint, lag, partitions, gaps and backfills",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := sidecar.LoadConfig(configPath)
			if err != nil {
				return err
			}
			st, err := readStatus(cmd.Context(), cfg, conn)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			return printStatus(cmd.OutOrStdout(), st, time.Now())
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "sluice.yaml", "config file of the sluice to report on")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON for machines")
	controlFlags(cmd, &conn)
	return cmd
}

func readStatus(ctx context.Context, cfg sidecar.Config, conn natsClient) (Status, error) {
	st := Status{Source: cfg.Source.Name, Stream: cfg.Stream.Name, Partitions: make([]uint64, cfg.Stream.Partitions)}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nc, js, store, err := openControlStore(ctx, cfg, conn, "sluice-status")
	if err != nil {
		return st, err
	}
	defer nc.Close()
	stream, err := js.Stream(ctx, cfg.Stream.Name)
	if err != nil {
		return st, fmt.Errorf("stream %s: %w (has sluice run started with this config?)", cfg.Stream.Name, err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(cfg.Stream.SubjectPrefix+"."+cfg.Source.Name+".>"))
	if err != nil {
		return st, fmt.Errorf("stream %s: %w", cfg.Stream.Name, err)
	}
	st.Messages, st.Bytes = info.State.Msgs, info.State.Bytes
	for subject, n := range info.State.Subjects {
		last := subject[strings.LastIndexByte(subject, '.')+1:]
		if p, err := strconv.Atoi(last); err == nil && p < len(st.Partitions) {
			st.Partitions[p] += n
			continue
		}
		if st.Other == nil {
			st.Other = map[string]int64{}
		}
		st.Other[last] += int64(n)
	}
	cp, ok, err := store.Load(ctx, cfg.Source.Name)
	if err != nil {
		return st, err
	}
	if ok {
		st.Checkpoint = &StatusPosition{Position: string(cp.Position), StreamSeq: cp.StreamSeq, LastEvent: cp.LastEvent, Written: cp.UpdatedAt}
		if !cp.LastEvent.IsZero() {
			st.Checkpoint.LagSeconds = time.Since(cp.LastEvent).Seconds()
		}
	}
	if st.Gaps, err = backfill.LoadGaps(ctx, store, cfg.Source.Name); err != nil {
		return st, err
	}
	if st.Backfills, err = backfill.LoadJobs(ctx, store, cfg.Source.Name); err != nil {
		return st, err
	}
	sort.Slice(st.Backfills, func(a, b int) bool { return st.Backfills[a].Started.After(st.Backfills[b].Started) })
	if st.Consumers, err = sink.ConsumerLags(ctx, stream); err != nil {
		return st, err
	}
	return st, nil
}

func printStatus(w io.Writer, st Status, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "source\t%s\n", st.Source)
	fmt.Fprintf(tw, "stream\t%s: %d messages, %d bytes\n", st.Stream, st.Messages, st.Bytes)
	if cp := st.Checkpoint; cp != nil {
		fmt.Fprintf(tw, "checkpoint\t%s (stream seq %d), written %s ago\n", cp.Position, cp.StreamSeq, now.Sub(cp.Written).Round(time.Second))
		if !cp.LastEvent.IsZero() {
			fmt.Fprintf(tw, "last event\t%s (%s ago)\n", cp.LastEvent.UTC().Format(time.RFC3339), now.Sub(cp.LastEvent).Round(time.Second))
		}
	} else {
		fmt.Fprintf(tw, "checkpoint\tnone yet\n")
	}
	var parts []string
	for p, n := range st.Partitions {
		parts = append(parts, fmt.Sprintf("%d:%d", p, n))
	}
	fmt.Fprintf(tw, "partitions\t%s\n", strings.Join(parts, " "))
	for name, n := range st.Other {
		fmt.Fprintf(tw, "%s\t%d messages\n", name, n)
	}
	if len(st.Gaps) == 0 {
		fmt.Fprintf(tw, "gaps\tnone\n")
	}
	for _, g := range st.Gaps {
		fmt.Fprintf(tw, "gap\t%s: %s → %s, repaired by %d backfills (%s)\n", g.Detected.UTC().Format(time.RFC3339), g.From, g.To, len(g.Jobs), g.Cause)
	}
	if len(st.Backfills) == 0 {
		fmt.Fprintf(tw, "backfills\tnone\n")
	}
	for _, j := range st.Backfills {
		extra := " (" + j.Reason
		for i, f := range j.Filters {
			if i == 0 {
				extra += ", where "
			} else {
				extra += " and "
			}
			extra += f.String()
		}
		extra += ")"
		if j.Error != "" {
			extra += ": " + j.Error
		}
		fmt.Fprintf(tw, "backfill\t%s %s: %s, %d/%d rows, %d/%d chunks%s%s\n", j.ID, j.Table, j.State, j.Rows, j.Estimate, j.Chunks, j.ChunksEstimated(), rateETA(j), extra)
	}
	if len(st.Consumers) == 0 {
		fmt.Fprintf(tw, "consumers\tno durable consumer\n")
	}
	for _, c := range st.Consumers {
		state := "caught up"
		switch {
		case c.Behind():
			state = fmt.Sprintf("BEHIND RETENTION: missed %d events the stream no longer holds; backfill its tables (README \"Incidents\")", c.Missed)
		case !c.Oldest.IsZero():
			state = fmt.Sprintf("oldest unacknowledged from %s ago", now.Sub(c.Oldest).Round(time.Second))
		}
		fmt.Fprintf(tw, "consumer\t%s: %d pending, acknowledged to seq %d, %s\n", c.Name, c.Pending, c.AckFloor, state)
	}
	return tw.Flush()
}
