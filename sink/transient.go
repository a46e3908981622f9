package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Transient tells whether a JetStream call may succeed if repeated: a
// timeout, no responders, or the cluster between leaders or short of peers.
// Such errors are waited out, never turned into a skipped event.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		return true
	}
	var api *jetstream.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode {
		case 10005, // no suitable peers for placement
			10008, // cluster not available
			10009, // not the leader
			10023, // insufficient resources
			10074, // cluster not active
			10118: // stream offline
			return true
		}
		return api.Code >= 500
	}
	return false
}

const attemptTimeout = 5 * time.Second

// Retry calls fn until it succeeds, fails for good, or timeout passes while
// it keeps failing transiently. Waits are logged as "waiting for JetStream"
// with what is being done, so a stuck start-up says why.
func Retry(ctx context.Context, log *slog.Logger, what string, timeout time.Duration, fn func(ctx context.Context) error) error {
	deadline := time.Now().Add(timeout)
	for attempt := 1; ; attempt++ {
		// Each attempt gets its own deadline: a request nobody answers (no
		// leader yet) must not use up the whole wait in one go.
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil || !Transient(err) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: JetStream did not answer within %v (last error: %w); "+
				"in a cluster a majority of the servers must be up and routed to each other: check nats.cluster.routes and that the other members run",
				what, timeout, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn("waiting for JetStream", "to", what, "attempt", attempt, "error", err)
		}
		if err := Sleep(ctx, min(Backoff(attempt), time.Second)); err != nil {
			return err
		}
	}
}

// WaitJetStream waits until JetStream answers API requests: in a cluster,
// until its members found each other and elected a meta leader.
func WaitJetStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger, timeout time.Duration) error {
	return Retry(ctx, log, "reach JetStream", timeout, func(ctx context.Context) error {
		_, err := js.AccountInfo(ctx)
		return err
	})
}

// Backoff is the capped exponential wait before retry attempt n (from 1):
// 50 ms, doubled each attempt, at most 5 s.
func Backoff(n int) time.Duration {
	d := 50 * time.Millisecond
	for i := 1; i < n && d < 5*time.Second; i++ {
		d *= 2
	}
	return min(d, 5*time.Second)
}

// Sleep waits d, or until ctx ends and then returns its error.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
