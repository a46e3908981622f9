package sourcetest

import (
	"log/slog"
	"strings"
	"sync"
)

// Logs keeps what a source logs, for a test to read while the source
// writes: give Logger() as the spec's Log.
type Logs struct {
	mu sync.Mutex
	b  strings.Builder
}

// Logger writes text lines to l.
func (l *Logs) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything logged so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
