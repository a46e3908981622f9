package sources

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// Credentials supplies the database login a source connects with. Sources
// ask on every connect, so a rotated login is picked up by reconnecting.
type Credentials interface {
	Login(ctx context.Context) (Login, error)
	// Rejected says the database refused l (a revoked lease, a rotated
	// password): the next Login must read a fresh one, not hand l out again.
	Rejected(l Login)
}

// ErrLoginRejected is the database refusing a user and password.
var ErrLoginRejected = errors.New("login rejected")

// RetryRejected turns err, the database refusing login l mid-run, into a
// transient error when l came from creds: creds is told, and the pipeline
// reconnects (with backoff) with a fresh login. At start-up a refusal stays
// final, so a wrong secret fails fast.
func RetryRejected(creds Credentials, l *Login, err error) error {
	if l == nil || creds == nil || !errors.Is(err, ErrLoginRejected) {
		return err
	}
	creds.Rejected(*l)
	return fmt.Errorf("%w: %w", ErrDisconnected, err)
}

// Login is a database user and password. It prints, formats and logs
// without its password, so it cannot leak through a log line or an error.
type Login struct {
	User     string
	Password string
	// Expiring is closed when this login is about to stop working (its
	// lease cannot be renewed further, or was revoked): reconnect with a
	// fresh one. Nil for logins that do not expire.
	Expiring <-chan struct{}
}

// String hides the password.
func (l Login) String() string { return "login " + l.User + " (password hidden)" }

// GoString hides the password from %#v.
func (l Login) GoString() string { return l.String() }

// Format hides the password from every fmt verb, %+v included.
func (l Login) Format(f fmt.State, _ rune) { fmt.Fprint(f, l.String()) }

// LogValue hides the password from slog.
func (l Login) LogValue() slog.Value { return slog.StringValue(l.String()) }

// ErrLoginExpiring ends a stream whose login is expiring, so the pipeline
// reconnects (with a fresh login) and resumes from what it has stored.
var ErrLoginExpiring = fmt.Errorf("%w: the database login is expiring; reconnecting with a fresh one", ErrDisconnected)

// UntilExpiring returns a context that also ends when the login starts
// expiring, a func telling whether that is why it ended, and a stop func to
// call when done with it. A nil login never expires.
func (l *Login) UntilExpiring(ctx context.Context) (context.Context, func() bool, func()) {
	if l == nil || l.Expiring == nil {
		return ctx, func() bool { return false }, func() {}
	}
	sctx, cancel := context.WithCancel(ctx)
	var expired atomic.Bool
	go func() {
		select {
		case <-l.Expiring:
			expired.Store(true)
			cancel()
		case <-sctx.Done():
		}
	}()
	return sctx, expired.Load, cancel
}
