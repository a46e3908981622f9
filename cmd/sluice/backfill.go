package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluice-cdc/sluice/cmd/sluice/sidecar"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/sluice-cdc/sluice/backfill"
	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sources"
)

func backfillCommand() *cobra.Command {
	var (
		configPath string
		filterText []string
		where      string
		cancel     bool
		detach     bool
		conn       natsClient
	)
	cmd := &cobra.Command{
		Use:   "backfill --config FILE TABLE... [--filter \"COLUMN OP VALUE\"]... | --cancel TABLE...",
		Short: "Ask the running sluice to backfill tables (or stop a backfill), and show its progress",
		Long: "Ask the sluice running with this config to replay TABLE (schema.table; MySQL database.table) into the stream\n" +
			"with op \"r\" events, chunk by chunk, while streaming goes on (DBLog watermarks). Progress is shown until every\n" +
			"job is done; interrupting this command does not stop the backfill (it runs inside sluice run); --cancel does.\n" +
			"Without --filter, each chunk is followed by a chunk event that lets consumers drop rows deleted meanwhile.\n" +
			"A filter is COLUMN OP VALUE with OP one of = <> < <= > >=, or COLUMN in V1,V2,..., or COLUMN is [not] null;\n" +
			"filters repeat and are ANDed. Values are bound as parameters: no SQL text is sent.",
		Example: "  sluice backfill --config sluice.yaml public.orders public.customers\n" +
			"  sluice backfill -c sluice.yaml public.orders --filter \"region = eu\" --filter \"id >= 1000\"\n" +
			"  sluice backfill -c sluice.yaml --cancel public.orders",
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if where != "" {
				return errors.New("--where is gone: sluice no longer sends SQL text to the database; write the condition as --filter \"COLUMN OP VALUE\" (repeatable, ANDed), e.g. --filter \"region = eu\"")
			}
			var filters []sources.Filter
			for _, f := range filterText {
				fl, err := sources.ParseFilter(f)
				if err != nil {
					return fmt.Errorf("--filter: %w", err)
				}
				filters = append(filters, fl)
			}
			if cancel && len(filters) > 0 {
				return errors.New("--cancel takes only tables, not --filter")
			}
			cfg, err := sidecar.LoadConfig(configPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if cancel {
				return cancelBackfill(ctx, cmd.ErrOrStderr(), cfg, conn, splitTables(args))
			}
			err = requestBackfill(ctx, cmd.ErrOrStderr(), cfg, conn, splitTables(args), filters, !detach)
			if errors.Is(err, context.Canceled) {
				fmt.Fprintln(cmd.ErrOrStderr(), "stopped watching; the backfill goes on inside sluice run (sluice backfill --cancel stops it)")
				return nil
			}
			return err
		},
	}
	cmd.Flags().StringVarP(&configPath, "config", "c", "sluice.yaml", "config file of the running sluice")
	cmd.Flags().StringArrayVar(&filterText, "filter", nil, "backfill only rows where COLUMN OP VALUE (repeatable, ANDed; no chunk events: deletes are not repaired)")
	cmd.Flags().StringVar(&where, "where", "", "removed: use --filter")
	_ = cmd.Flags().MarkHidden("where")
	cmd.Flags().BoolVar(&cancel, "cancel", false, "stop the running backfill of each TABLE instead of starting one")
	cmd.Flags().BoolVar(&detach, "detach", false, "return once the jobs are queued, without showing progress")
	controlFlags(cmd, &conn)
	return cmd
}

// controlFlags are the NATS login flags of the commands that reach a
// running sluice through its config (see controlClient).
func controlFlags(cmd *cobra.Command, conn *natsClient) {
	cmd.Flags().StringVar(&conn.URL, "nats", "", "NATS URL (default: nats.url, or the embedded server's nats.listen)")
	cmd.Flags().StringVar(&conn.User, "user", os.Getenv("NATS_USER"), "NATS user (default $NATS_USER, else the first admin user of nats.users)")
	passwordFlag(cmd, &conn.Password)
	cmd.Flags().StringVar(&conn.CA, "tls-ca", "", "CA of the server's TLS certificate (default nats.tls.ca)")
}

func splitTables(args []string) []string {
	var out []string
	for _, a := range args {
		for _, t := range strings.Split(a, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// controlClient is how the commands that read a config (backfill, status,
// schema) reach the running sluice: the config's NATS, logged in, unless
// told otherwise, as the local admin the embedded server wrote to its
// store (readable by sluice's own user only), else as the config's first
// admin or backfill login.
func controlClient(cfg sidecar.Config, c natsClient) natsClient {
	if c.Password == "" {
		c.Password = os.Getenv("NATS_PASSWORD")
	}
	if c.URL == "" {
		c.URL = cfg.NATS.URL
		if c.URL == "" {
			scheme := "nats://"
			if cfg.NATS.TLS != nil {
				scheme = "tls://"
			}
			c.URL = scheme + cfg.NATS.Listen
		}
	}
	if c.User == "" && cfg.NATS.URL == "" {
		if u, err := sink.ReadLocalAdmin(sink.LocalAdminPath(cfg.NATS.StoreDir)); err == nil {
			c.User, c.Password = u.User, u.Password
		}
	}
	if c.User == "" {
		for _, want := range []string{"admin", "backfill"} {
			for _, u := range cfg.NATS.Users {
				if c.User == "" && u.User != "" && u.Permissions == want {
					c.User, c.Password = u.User, u.Password
				}
			}
		}
	}
	if c.CA == "" && cfg.NATS.TLS != nil {
		c.CA = cfg.NATS.TLS.CA
	}
	// The embedded server keeps the event streams in their own account;
	// every login reaches them under this prefix.
	if cfg.NATS.URL == "" {
		c.APIPrefix = sink.EventsAPIPrefix
	}
	return c
}

func requestBackfill(ctx context.Context, w io.Writer, cfg sidecar.Config, conn natsClient, tables []string, filters []sources.Filter, watch bool) error {
	nc, err := controlClient(cfg, conn).connect("sluice-backfill")
	if err != nil {
		return err
	}
	defer nc.Close()
	rep, err := backfill.Ask(ctx, nc, backfill.StartSubject(cfg.Source.Name), backfill.Request{Tables: tables, Filters: filters})
	if err != nil {
		return err
	}
	ids := make(map[string]bool)
	for _, j := range rep.Jobs {
		ids[j.ID] = true
		fmt.Fprintf(w, "backfill %s of %s: %s (about %d rows, %d chunks of %d)\n", j.ID, j.Table, j.State, j.Estimate, j.ChunksEstimated(), j.ChunkSize)
	}
	if !watch {
		return nil
	}
	return watchJobs(ctx, w, nc, cfg.Source.Name, ids)
}

// cancelBackfill stops the running backfills of tables.
func cancelBackfill(ctx context.Context, w io.Writer, cfg sidecar.Config, conn natsClient, tables []string) error {
	nc, err := controlClient(cfg, conn).connect("sluice-backfill")
	if err != nil {
		return err
	}
	defer nc.Close()
	rep, err := backfill.Ask(ctx, nc, backfill.CancelSubject(cfg.Source.Name), backfill.CancelRequest{Tables: tables})
	if err != nil {
		return err
	}
	for _, j := range rep.Jobs {
		fmt.Fprintf(w, "backfill %s of %s: %s after %d rows, %d chunks\n", j.ID, j.Table, j.State, j.Rows, j.Chunks)
		if j.Reason == backfill.ReasonGap {
			fmt.Fprintf(w, "warning: %s was repairing a lost log position (gap %s); rows deleted during the gap stay in consumers' copies until you run: sluice backfill %s\n", j.Table, j.Gap, j.Table)
		}
	}
	return nil
}

// watchJobs shows the jobs' progress until each is done or failed: a bar
// per job on a terminal, a line every few seconds otherwise.
func watchJobs(ctx context.Context, w io.Writer, nc *nats.Conn, source string, ids map[string]bool) error {
	f, isFile := w.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	bars := make(map[string]*progressbar.ProgressBar)
	lastLine := time.Time{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		rep, err := backfill.Ask(ctx, nc, backfill.JobsSubject(source), struct{}{})
		if err != nil {
			return err
		}
		open, failed := 0, []string{}
		for _, j := range rep.Jobs {
			if !ids[j.ID] {
				continue
			}
			if tty {
				bar := bars[j.ID]
				if bar == nil {
					bar = progressbar.NewOptions64(max(j.Estimate, 1),
						progressbar.OptionSetWriter(w),
						progressbar.OptionSetDescription(j.Table),
						progressbar.OptionShowCount(),
						progressbar.OptionShowIts(),
						progressbar.OptionSetItsString("rows"),
						progressbar.OptionSetPredictTime(true),
						progressbar.OptionFullWidth(),
						progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }))
					bars[j.ID] = bar
				}
				if j.Rows > bar.GetMax64() {
					bar.ChangeMax64(j.Rows)
				}
				_ = bar.Set64(j.Rows)
				if j.State == backfill.StateDone {
					bar.ChangeMax64(j.Rows)
					_ = bar.Finish()
				}
			} else if time.Since(lastLine) >= 5*time.Second || j.State != backfill.StateRunning {
				fmt.Fprintf(w, "%s %s: %s, %d/%d rows, %d/%d chunks%s\n", j.ID, j.Table, j.State, j.Rows, j.Estimate, j.Chunks, j.ChunksEstimated(), rateETA(j))
			}
			switch j.State {
			case backfill.StateRunning:
				open++
			case backfill.StateFailed:
				failed = append(failed, fmt.Sprintf("%s: %s", j.Table, j.Error))
			case backfill.StateCancelled:
				failed = append(failed, fmt.Sprintf("%s: cancelled", j.Table))
			}
			if j.State != backfill.StateRunning {
				delete(ids, j.ID)
			}
		}
		if !tty && time.Since(lastLine) >= 5*time.Second {
			lastLine = time.Now()
		}
		if len(failed) > 0 {
			return fmt.Errorf("backfill failed: %s", strings.Join(failed, "; "))
		}
		if open == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// rateETA formats a job's rows/s since it started and the time left by
// its estimate.
func rateETA(j backfill.Job) string {
	end := j.Updated
	if end.IsZero() || j.Rows == 0 {
		return ""
	}
	if !j.Finished.IsZero() {
		end = j.Finished
	}
	secs := end.Sub(j.Started).Seconds()
	if secs <= 0 {
		return ""
	}
	rate := float64(j.Rows) / secs
	out := fmt.Sprintf(", %.0f rows/s", rate)
	if j.State == backfill.StateRunning && j.Estimate > j.Rows {
		out += fmt.Sprintf(", ETA %s", (time.Duration(float64(j.Estimate-j.Rows)/rate) * time.Second).Round(time.Second))
	}
	return out
}

// openControlStore connects as controlClient does and opens the
// checkpoint bucket, for the commands that read what sluice run keeps. The
// JetStream it returns reaches the event stream.
func openControlStore(ctx context.Context, cfg sidecar.Config, conn natsClient, name string) (*nats.Conn, jetstream.JetStream, *checkpoint.Store, error) {
	c := controlClient(cfg, conn)
	nc, err := c.connect(name)
	if err != nil {
		return nil, nil, nil, err
	}
	js, err := c.jetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	stateJS, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, nil, err
	}
	store, err := checkpoint.Open(ctx, stateJS, cfg.Checkpoint.Bucket, cfg.Stream.Replicas)
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("%w (reading sluice's checkpoint bucket needs an admin login: run this on sluice's host as its user, where the local admin login is read from nats.store_dir, or pass --user with an admin login)", err)
	}
	return nc, js, store, nil
}
