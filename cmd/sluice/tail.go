package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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
		url       string
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
			err := tail(ctx, cmd.OutOrStdout(), url, args[0], fromStart, count)
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
	cmd.Flags().StringVar(&url, "nats", def, "NATS server URL (default $NATS_URL or nats://127.0.0.1:4222)")
	cmd.Flags().BoolVar(&fromStart, "from-start", false, "print the stored events from the beginning of the stream")
	cmd.Flags().IntVar(&count, "count", 0, "exit after printing N events (0 = run until interrupted)")
	return cmd
}

// tail prints the events of every stream that holds subject.
func tail(ctx context.Context, w io.Writer, url, subject string, fromStart bool, count int) error {
	nc, err := nats.Connect(url, nats.Name("sluice-tail"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w (is sluice running? use --nats to point elsewhere)", url, err)
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
