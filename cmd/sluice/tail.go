package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	neturl "net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-cdc/sluice/sink"
	"github.com/sluice-cdc/sluice/sink/consumer"
)

func tailCommand() *cobra.Command {
	var (
		conn natsClient
		opts tailOptions
	)
	cmd := &cobra.Command{
		Use:   "tail [--nats URL] [--from-start] [--count N] [--idle DURATION] [--materialize] SUBJECT",
		Short: "Print change events of a subject, one JSON object per line, or the rows they add up to",
		Long: "Print the change events stored under SUBJECT (wildcards allowed, e.g. cdc.> or cdc.pg1.public.orders.*),\n" +
			"one JSON object per line. By default only new events; --from-start prints the stored history first.\n\n" +
			"With --materialize, tail prints no events: it applies them (with backfill rows and chunk events) to an\n" +
			"in-memory copy of the tables, as the reference consumer github.com/sluice-cdc/sluice/sink/consumer does,\n" +
			"and when it stops (--count, --idle, or an interrupt) prints every row, one JSON object per line:\n" +
			"  " + `{"source":"pg1","table":"public.orders","key":{"id":42},"row":{"id":42,"status":"paid"}}` + "\n" +
			"sorted by source, table and the bytes of the key's canonical encoding; key columns in key order,\n" +
			"row columns sorted by name, values as in the events.",
		Example: "  sluice tail 'cdc.>'\n  sluice tail --from-start --count 10 cdc.pg1.public.orders.3\n" +
			"  sluice tail --from-start --materialize --idle 2s 'cdc.pg1.>'",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err := tailWith(ctx, cmd.OutOrStdout(), conn, args[0], opts)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	clientFlags(cmd, &conn)
	cmd.Flags().BoolVar(&opts.FromStart, "from-start", false, "print the stored events from the beginning of the stream")
	cmd.Flags().IntVar(&opts.Count, "count", 0, "exit after reading N events (0 = run until interrupted)")
	cmd.Flags().DurationVar(&opts.Idle, "idle", 0, "exit once no event has arrived for this long, e.g. 2s (0 = never)")
	cmd.Flags().BoolVar(&opts.Materialize, "materialize", false,
		"apply the events to an in-memory copy of the tables and, on exit, print its rows as JSON lines\n"+
			`{"source":...,"table":"schema.table","key":{...},"row":{...}}, sorted by source, table and canonical key bytes`)
	return cmd
}

// clientFlags are the flags of a consumer command that logs in to NATS.
func clientFlags(cmd *cobra.Command, conn *natsClient) {
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	cmd.Flags().StringVar(&conn.URL, "nats", def, "NATS server URL, or several comma-separated (default $NATS_URL or nats://127.0.0.1:4222)")
	cmd.Flags().StringVar(&conn.User, "user", os.Getenv("NATS_USER"), "NATS user (default $NATS_USER)")
	passwordFlag(cmd, &conn.Password)
	cmd.Flags().StringVar(&conn.CA, "tls-ca", os.Getenv("NATS_CA"), "CA certificate that verifies the server's TLS certificate (default $NATS_CA)")
	if conn.Password == "" {
		conn.Password = os.Getenv("NATS_PASSWORD")
	}
}

// passwordFlag keeps --password working for old scripts, deprecated: a
// password in the arguments is visible to every user of the host (ps,
// /proc/<pid>/cmdline). The password belongs in $NATS_PASSWORD.
func passwordFlag(cmd *cobra.Command, password *string) {
	cmd.Flags().StringVar(password, "password", "", "NATS password (deprecated: use $NATS_PASSWORD)")
	_ = cmd.Flags().MarkDeprecated("password", "a password in the arguments shows in ps to every user of the host: set $NATS_PASSWORD instead")
}

// natsClient is how a consumer command reaches NATS.
type natsClient struct {
	URL, User, Password string
	CA                  string // verifies the server's certificate
	// APIPrefix reaches the event streams' JetStream API: sluice's
	// embedded server serves it under sink.EventsAPIPrefix to every login.
	// Empty tries that prefix, then the default one (another NATS).
	APIPrefix string
	// Log, when set, gets the connection's asynchronous errors, which
	// nats.go otherwise prints to stderr; and the connection then never
	// gives up reconnecting: a long-running consumer (sluice apply)
	// outlives any outage of sluice's server.
	Log *slog.Logger
}

// jetStream returns the JetStream API of the event streams on nc.
func (c natsClient) jetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	if c.APIPrefix != "" {
		return jetstream.NewWithAPIPrefix(nc, c.APIPrefix)
	}
	// A sluice-embedded server answers under its prefix; any other NATS
	// has no responder there and is asked the usual way.
	if _, err := nc.Request(sink.EventsAPIPrefix+".INFO", nil, 2*time.Second); err == nil {
		return jetstream.NewWithAPIPrefix(nc, sink.EventsAPIPrefix)
	}
	return jetstream.New(nc)
}

func (c natsClient) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name)}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.Log != nil {
		log := c.Log
		opts = append(opts, nats.MaxReconnects(-1),
			nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
				log.Warn("NATS connection error", "error", err)
			}),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				log.Warn("disconnected from NATS; reconnecting", "error", err)
			}),
			nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "url", redactURL(nc.ConnectedUrl())) }))
	}
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		hint := "is sluice running? use --nats to point elsewhere"
		if errors.Is(err, nats.ErrAuthorization) {
			hint = "check --user and $NATS_PASSWORD"
		} else if strings.Contains(err.Error(), "tls") || strings.Contains(err.Error(), "x509") {
			hint = "the server speaks TLS: pass its CA with --tls-ca"
		}
		return nil, fmt.Errorf("connect to NATS at %s: %w (%s)", redactURL(c.URL), err, hint)
	}
	return nc, nil
}

// redactURL hides passwords in NATS URLs, which may carry user:password.
func redactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := neturl.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

// tailOptions are tail's flags.
type tailOptions struct {
	FromStart bool
	Count     int           // stop after this many events; 0 = never
	Idle      time.Duration // stop once no event came for this long; 0 = never
	// Materialize applies the events to a consumer.View and prints its
	// rows on exit instead of the events.
	Materialize bool
}

// tail prints the events of every stream that holds subject.
func tail(ctx context.Context, w io.Writer, conn natsClient, subject string, fromStart bool, count int) error {
	return tailWith(ctx, w, conn, subject, tailOptions{FromStart: fromStart, Count: count})
}

// tailMsg is an event with the subject it came on: the subject's last
// token is the partition that truncates and chunk events act on.
type tailMsg struct {
	subject string
	data    []byte
}

// tailWith is tail with every option; with o.Materialize it prints the
// rows the events add up to rather than the events.
func tailWith(ctx context.Context, w io.Writer, conn natsClient, subject string, o tailOptions) error {
	url := redactURL(conn.URL)
	nc, err := conn.connect("sluice-tail")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := conn.jetStream(nc)
	if err != nil {
		return err
	}
	var streams []string
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(subject))
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("list streams at %s: %w", url, err)
	}
	if len(streams) == 0 {
		return fmt.Errorf("no stream at %s holds subject %q: is sluice running, and is the subject right (e.g. 'cdc.>')?", url, subject)
	}
	policy := jetstream.DeliverNewPolicy
	if o.FromStart {
		policy = jetstream.DeliverAllPolicy
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan tailMsg, 256)
	g, gctx := errgroup.WithContext(ctx)
	followed := 0
	var denied []string
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil && len(streams) > 1 {
			// Another source's stream, which this login may not read.
			denied = append(denied, name)
			continue
		}
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		followed++
		ocfg := jetstream.OrderedConsumerConfig{DeliverPolicy: policy}
		// A filter wider than the stream is the whole stream.
		if !coversAll(subject, s.CachedInfo().Config.Subjects) {
			ocfg.FilterSubjects = []string{subject}
		}
		c, err := s.OrderedConsumer(ctx, ocfg)
		if err != nil {
			return fmt.Errorf("follow stream %s: %w", name, err)
		}
		g.Go(func() error {
			it, err := c.Messages()
			if err != nil {
				return err
			}
			go func() { <-gctx.Done(); it.Stop() }()
			for {
				m, err := it.Next()
				if err != nil {
					if gctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						return nil
					}
					return fmt.Errorf("read stream %s: %w", name, err)
				}
				select {
				case events <- tailMsg{m.Subject(), m.Data()}:
				case <-gctx.Done():
					return nil
				}
			}
		})
	}
	if followed == 0 {
		return fmt.Errorf("this login may read none of the streams holding %q (%s): subscribe to your source's subjects, e.g. 'cdc.<source>.>'", subject, strings.Join(denied, ", "))
	}
	out := bufio.NewWriter(w)
	defer out.Flush()
	var view *consumer.View
	if o.Materialize {
		view = consumer.NewView()
	}
	// finish ends the read and, when materializing, prints the rows: every
	// way of stopping (count, idle, signal) shows what was read so far.
	finish := func(err error) error {
		cancel()
		_ = g.Wait() // readers stopped on purpose; what they say now is noise
		if view != nil {
			if perr := view.WriteJSONLines(out); perr != nil && err == nil {
				err = perr
			}
		}
		if ferr := out.Flush(); ferr != nil && err == nil {
			err = ferr
		}
		return err
	}
	var idle <-chan time.Time
	var timer *time.Timer
	if o.Idle > 0 {
		timer = time.NewTimer(o.Idle)
		defer timer.Stop()
		idle = timer.C
	}
	read := 0
	for {
		select {
		case e := <-events:
			if view != nil {
				if err := view.Apply(e.subject, e.data); err != nil {
					cancel()
					_ = g.Wait()
					return err
				}
			} else {
				out.Write(e.data)
				out.WriteByte('\n')
			}
			read++
			if o.Count > 0 && read >= o.Count {
				return finish(nil)
			}
			if timer != nil {
				timer.Reset(o.Idle)
			}
			if view == nil && len(events) == 0 {
				if err := out.Flush(); err != nil {
					return err
				}
			}
		case <-idle:
			return finish(nil)
		case <-gctx.Done():
			if err := g.Wait(); err != nil {
				return err
			}
			return finish(ctx.Err())
		}
	}
}

// coversAll reports whether the subject pattern matches every subject of
// the stream's subject list.
func coversAll(pattern string, subjects []string) bool {
	for _, s := range subjects {
		if !covers(strings.Split(pattern, "."), strings.Split(s, ".")) {
			return false
		}
	}
	return len(subjects) > 0
}

func covers(p, s []string) bool {
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok == "*":
			if s[i] == ">" {
				return false
			}
		case tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}
