package sink

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrStreamMismatch means an existing stream was created for a different
// layout than the configuration asks for.
var ErrStreamMismatch = errors.New("stream does not match the configuration")

// DefaultDuplicateWindow is JetStream's message-id dedup window sluice asks
// for (stream.duplicate_window). It is a last guard only: the
// expected-sequence chain and the ids read back on restart keep every
// message once. JetStream holds each id of the window in memory, about
// 250 bytes: 1s at 110k events/s was 27 MB, a third of the live heap.
const DefaultDuplicateWindow = 250 * time.Millisecond

// StreamConfig describes the stream one source publishes to.
type StreamConfig struct {
	Name            string // JetStream stream name
	Prefix          string // subject prefix, e.g. "cdc"
	Source          string // source name, the second subject token
	Partitions      int
	Replicas        int
	MaxAge          time.Duration // 0 keeps messages forever
	DuplicateWindow time.Duration
}

// Subjects returns the stream's subject filter: every subject of the source.
func (c StreamConfig) Subjects() []string {
	return []string{c.Prefix + "." + c.Source + ".>"}
}

// Metadata keys recorded on the stream so a later start can tell whether
// the layout changed under it.
const (
	metaPartitions = "sluice.partitions"
	metaSource     = "sluice.source"
)

// StreamPartitions returns the partition count sluice recorded on a
// source's stream, checking that the stream is that source's.
func StreamPartitions(cfg jetstream.StreamConfig, source string) (int, error) {
	if got := cfg.Metadata[metaSource]; got != source {
		return 0, fmt.Errorf("the stream belongs to source %q, not %q", got, source)
	}
	n, err := strconv.Atoi(cfg.Metadata[metaPartitions])
	if err != nil || n < 1 {
		return 0, fmt.Errorf("the stream records no partition count (metadata %s = %q): is it a sluice stream?", metaPartitions, cfg.Metadata[metaPartitions])
	}
	return n, nil
}

// EnsureStream creates the stream, or checks that the existing one has the
// configured subjects and partition count. Changing the partition count of
// an existing stream would send a key to a new partition and break per-key
// order, so it is an error, never a silent change.
func EnsureStream(ctx context.Context, js jetstream.JetStream, c StreamConfig) (jetstream.Stream, error) {
	want := jetstream.StreamConfig{
		Name:        c.Name,
		Description: "sluice change events of source " + c.Source,
		Subjects:    c.Subjects(),
		Storage:     jetstream.FileStorage,
		Replicas:    c.Replicas,
		MaxAge:      c.MaxAge,
		Duplicates:  c.DuplicateWindow,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Metadata: map[string]string{
			metaPartitions: strconv.Itoa(c.Partitions),
			metaSource:     c.Source,
		},
	}
	s, err := js.Stream(ctx, c.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("create stream %s: %w", c.Name, err)
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", c.Name, err)
	}
	have := s.CachedInfo().Config
	var problems []string
	if strings.Join(have.Subjects, ",") != strings.Join(want.Subjects, ",") {
		problems = append(problems, fmt.Sprintf("it has subjects %v, the configuration gives %v (stream.subject_prefix, source.name)",
			have.Subjects, want.Subjects))
	}
	if got := have.Metadata[metaPartitions]; got != want.Metadata[metaPartitions] {
		problems = append(problems, fmt.Sprintf("it has %s partitions, the configuration asks for %d (stream.partitions); "+
			"the partition count of a stream is fixed: see README \"Changing the partition count\"", orNone(got), c.Partitions))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: stream %s: %s", ErrStreamMismatch, c.Name, strings.Join(problems, "; "))
	}
	if have.Replicas != want.Replicas || have.MaxAge != want.MaxAge || have.Duplicates != want.Duplicates {
		// Safe to change in place: they alter neither subjects nor order.
		s, err = js.UpdateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("update stream %s (replicas %d→%d, max_age %s→%s): %w",
				c.Name, have.Replicas, want.Replicas, have.MaxAge, want.MaxAge, err)
		}
	}
	return s, nil
}

func orNone(s string) string {
	if s == "" {
		return "no recorded"
	}
	return s
}
