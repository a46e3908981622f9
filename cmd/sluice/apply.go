package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-cdc/sluice/apply"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
)

// applyOptions are apply's flags.
type applyOptions struct {
	To            string
	Group, Member string
	Create        bool
	Batch         int
	TakeoverAfter time.Duration
	HTTPListen    string
	Log           sidecar.LogConfig
	// Metrics, when set, is the registry apply's metrics go to (tests
	// read them); otherwise a new one.
	Metrics *prometheus.Registry
}

func applyCommand() *cobra.Command {
	var (
		conn natsClient
		opts applyOptions
	)
	cmd := &cobra.Command{
		Use:   "apply --to postgres://... [--nats URL] [--group NAME] [--create] 'PREFIX.SOURCE.>'",
		Short: "Apply a source's change events to the same tables of a PostgreSQL database, exactly once",
		Long: "Apply the change events of one source (the subjects PREFIX.SOURCE.>) to the tables of the same\n" +
			"schema.table in a target PostgreSQL database: inserts, updates and backfill rows are upserts (columns\n" +
			"an update left unchanged keep their value), deletes delete, truncates and backfill chunk events delete\n" +
			"what they say. Each transaction stores, with the rows, the stream sequence it reached in\n" +
			"sluice.apply_positions, so nothing is applied twice or skipped across crashes.\n\n" +
			"Members started with the same --group share the source's partitions (README \"Consuming at scale\"):\n" +
			"each partition is applied by one member at a time, in order; a dead member's partitions move to the\n" +
			"others after --takeover-after. A read login is enough (--user, $NATS_PASSWORD).\n\n" +
			"The target login needs CREATE on the database (for schema sluice) and write access to the tables;\n" +
			"give its password in $PGPASSWORD or ~/.pgpass rather than in --to, which ps shows.",
		Example: "  PGPASSWORD=... sluice apply --nats nats://10.0.0.5:4222 --user reader --to postgres://app@replica/shop --create 'cdc.pg1.>'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runApply(ctx, conn, args[0], opts)
		},
	}
	clientFlags(cmd, &conn)
	host, _ := os.Hostname()
	cmd.Flags().StringVar(&opts.To, "to", os.Getenv("SLUICE_APPLY_TO"), "target PostgreSQL connection string (default $SLUICE_APPLY_TO)")
	cmd.Flags().StringVar(&opts.Group, "group", apply.DefaultGroup, "consumer group: members with the same group share the partitions")
	cmd.Flags().StringVar(&opts.Member, "member", host+"-"+strconv.Itoa(os.Getpid()), "this member's name, recorded with what it applies")
	cmd.Flags().BoolVar(&opts.Create, "create", false, "create a missing table from its shape on the stream")
	cmd.Flags().IntVar(&opts.Batch, "batch", apply.DefaultBatch, "the most events one transaction applies")
	cmd.Flags().DurationVar(&opts.TakeoverAfter, "takeover-after", consumer.DefaultTakeoverAfter, "how long a dead member keeps its partitions")
	cmd.Flags().StringVar(&opts.HTTPListen, "http-listen", "127.0.0.1:9466", `serve /metrics and /healthz here ("" = no HTTP port)`)
	cmd.Flags().StringVar(&opts.Log.Format, "log-format", "text", "text or json")
	cmd.Flags().StringVar(&opts.Log.Level, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// applyTarget splits 'PREFIX.SOURCE.>' into its prefix and source.
func applyTarget(subject string) (prefix, source string, err error) {
	t := strings.Split(subject, ".")
	if len(t) != 3 || t[2] != ">" || t[0] == "" || t[1] == "" || strings.ContainsAny(t[0]+t[1], "*> ") {
		return "", "", fmt.Errorf("apply takes the subjects of one source, PREFIX.SOURCE.> (e.g. 'cdc.pg1.>'), not %q", subject)
	}
	return t[0], t[1], nil
}

func runApply(ctx context.Context, conn natsClient, subject string, o applyOptions) error {
	log := sidecar.NewLogger(o.Log)
	prefix, source, err := applyTarget(subject)
	if err != nil {
		return err
	}
	if o.To == "" {
		return errors.New("--to is empty: give the target PostgreSQL database, e.g. --to postgres://app@replica:5432/shop")
	}
	if passwordIn(o.To) {
		log.Warn("the target password is in --to, which every user of this host sees in ps: give it in $PGPASSWORD or ~/.pgpass")
	}
	conn.Log = log
	nc, err := conn.connect("sluice-apply " + o.Member)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := conn.jetStream(nc)
	if err != nil {
		return err
	}
	stream, partitions, err := sourceStream(ctx, js, subject, source)
	if err != nil {
		return fmt.Errorf("%w (at %s)", err, redactURL(conn.URL))
	}
	pcfg, err := pgxpool.ParseConfig(o.To)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	pcfg.MaxConns = int32(partitions + 2)
	// Keys are rebuilt from the target's text of dates (apply's truncate
	// and chunk rules), which must be ISO whatever the server's default.
	pcfg.ConnConfig.RuntimeParams["datestyle"] = "ISO, YMD"
	db, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer db.Close()
	if err := db.Ping(ctx); err != nil {
		return fmt.Errorf("connect to the target %s:%d/%s: %w (check --to and $PGPASSWORD)", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database, err)
	}
	reg := o.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	g, gctx := errgroup.WithContext(ctx)
	if o.HTTPListen != "" {
		serve, _, err := sidecar.ListenMetrics(o.HTTPListen, reg, log)
		if err != nil {
			return fmt.Errorf("--http-listen: %w", err)
		}
		g.Go(func() error { return serve(gctx) })
	}
	log.Info("apply: starting", "member", o.Member, "group", o.Group, "stream", stream, "partitions", partitions,
		"target", fmt.Sprintf("%s:%d/%s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database))
	g.Go(func() error {
		err := apply.Run(gctx, js, db, apply.Config{
			Stream: stream, Prefix: prefix, Source: source, Partitions: partitions,
			Group: o.Group, Member: o.Member, TakeoverAfter: o.TakeoverAfter, Batch: o.Batch, Create: o.Create,
			Log: log, Metrics: reg,
		})
		if err == nil && ctx.Err() == nil {
			err = errors.New("apply stopped")
		}
		return err
	})
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		log.Info("apply: stopped")
		return nil
	}
	return err
}

// passwordIn tells whether a connection string carries a password: in a
// URL's user info, or as a password= keyword or query parameter.
func passwordIn(dsn string) bool {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			return true
		}
	}
	return strings.Contains(dsn, "password=")
}

// sourceStream finds the stream of a source's subjects and its partition
// count, which sluice records on the stream.
func sourceStream(ctx context.Context, js jetstream.JetStream, subject, source string) (string, int, error) {
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(subject))
	var streams []string
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		return "", 0, fmt.Errorf("list streams: %w", err)
	}
	if len(streams) != 1 {
		return "", 0, fmt.Errorf("%d streams hold %q, want one: is sluice running, and is the subject right (e.g. 'cdc.pg1.>')?", len(streams), subject)
	}
	s, err := js.Stream(ctx, streams[0])
	if err != nil {
		return "", 0, fmt.Errorf("stream %s: %w", streams[0], err)
	}
	n, err := sink.StreamPartitions(s.CachedInfo().Config, source)
	if err != nil {
		return "", 0, fmt.Errorf("stream %s: %w", streams[0], err)
	}
	return streams[0], n, nil
}
