package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
)

func tailCommand() *cobra.Command {
	var (
		conn      natsClient
		fromStart bool
		count     int
	)
	cmd := &cobra.Command{
		Use:   "tail [--nats URL] [--from-start] [--count N] SUBJECT",
		Short: "Print change events of a subject, one JSON object per line",
		Long: "Print the change events stored under SUBJECT (wildcards allowed, e.g. cdc.> or cdc.pg1.public.orders.*),\n" +
			"one JSON object per line. By default only new events; --from-start prints the stored history first.",
		Example: "  sluice tail 'cdc.>'\n  sluice tail --from-start --count 10 cdc.pg1.public.orders.3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err := tail(ctx, cmd.OutOrStdout(), conn, args[0], fromStart, count)
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = "nats://127.0.0.1:4222"
	}
	cmd.Flags().StringVar(&conn.URL, "nats", def, "NATS server URL, or several comma-separated (default $NATS_URL or nats://127.0.0.1:4222)")
	cmd.Flags().StringVar(&conn.User, "user", os.Getenv("NATS_USER"), "NATS user (default $NATS_USER)")
	cmd.Flags().StringVar(&conn.Password, "password", "", "NATS password (default $NATS_PASSWORD; prefer the variable, a flag shows in ps)")
	cmd.Flags().StringVar(&conn.CA, "tls-ca", os.Getenv("NATS_CA"), "CA certificate that verifies the server's TLS certificate (default $NATS_CA)")
	if conn.Password == "" {
		conn.Password = os.Getenv("NATS_PASSWORD")
	}
	cmd.Flags().BoolVar(&fromStart, "from-start", false, "print the stored events from the beginning of the stream")
	cmd.Flags().IntVar(&count, "count", 0, "exit after printing N events (0 = run until interrupted)")
	return cmd
}

// tail prints the events of every stream that holds subject.
// natsClient is how a consumer command reaches NATS.
type natsClient struct {
	URL, User, Password string
	CA                  string // verifies the server's certificate
}

func (c natsClient) connect(name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name)}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
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

func tail(ctx context.Context, w io.Writer, conn natsClient, subject string, fromStart bool, count int) error {
	url := redactURL(conn.URL)
	nc, err := conn.connect("sluice-tail")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
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
	if fromStart {
		policy = jetstream.DeliverAllPolicy
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan []byte, 256)
	g, gctx := errgroup.WithContext(ctx)
	for _, name := range streams {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
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
				case events <- m.Data():
				case <-gctx.Done():
					return nil
				}
			}
		})
	}
	out := bufio.NewWriter(w)
	defer out.Flush()
	printed := 0
	for {
		select {
		case e := <-events:
			out.Write(e)
			out.WriteByte('\n')
			printed++
			if count > 0 && printed >= count {
				cancel()
				_ = g.Wait()
				return nil
			}
			if len(events) == 0 {
				if err := out.Flush(); err != nil {
					return err
				}
			}
		case <-gctx.Done():
			if err := g.Wait(); err != nil {
				return err
			}
			return ctx.Err()
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
