package sources_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
)

func TestLoginHidesPassword(t *testing.T) {
	l := sources.Login{User: "app", Password: "hunter2-s3cret"}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	log.Info("connect", "login", l)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("connect", "login", l, "ptr", &l)
	out := map[string]string{
		"%v":   fmt.Sprintf("%v", l),
		"%+v":  fmt.Sprintf("%+v", l),
		"%#v":  fmt.Sprintf("%#v", l),
		"%s":   fmt.Sprintf("%s", l),
		"%q":   fmt.Sprintf("%q", l),
		"&%+v": fmt.Sprintf("%+v", &l),
		"[]":   fmt.Sprint([]sources.Login{l}),
		"err":  fmt.Errorf("connect with %v: %w", l, errors.New("boom")).Error(),
		"slog": logs.String(),
	}
	for verb, s := range out {
		if strings.Contains(s, l.Password) {
			t.Errorf("%s shows the password: %s", verb, s)
		}
		if !strings.Contains(s, "app") {
			t.Errorf("%s lost the user name: %s", verb, s)
		}
	}
}

type creds struct{ rejected []sources.Login }

func (c *creds) Login(context.Context) (sources.Login, error) { return sources.Login{}, nil }
func (c *creds) Rejected(l sources.Login)                     { c.rejected = append(c.rejected, l) }

func TestRetryRejected(t *testing.T) {
	refused := fmt.Errorf("%w: server refused user", sources.ErrLoginRejected)
	l := &sources.Login{User: "v-1"}

	c := &creds{}
	err := sources.RetryRejected(c, l, refused)
	if !errors.Is(err, sources.ErrDisconnected) || !errors.Is(err, sources.ErrLoginRejected) {
		t.Errorf("a refused login from a credentials source: %v, want transient", err)
	}
	if len(c.rejected) != 1 || c.rejected[0].User != "v-1" {
		t.Errorf("credentials told of %v, want v-1", c.rejected)
	}

	// A login from the DSN itself will not change by retrying.
	if err := sources.RetryRejected(nil, nil, refused); errors.Is(err, sources.ErrDisconnected) {
		t.Errorf("a refused DSN login became transient: %v", err)
	}
	other := errors.New("other")
	if err := sources.RetryRejected(c, l, other); err != other || len(c.rejected) != 1 {
		t.Errorf("an unrelated error was treated as a refusal: %v", err)
	}
}

func TestUntilExpiring(t *testing.T) {
	expiring := make(chan struct{})
	l := &sources.Login{User: "u", Expiring: expiring}
	ctx, expired, stop := l.UntilExpiring(context.Background())
	defer stop()
	if expired() || ctx.Err() != nil {
		t.Fatal("expired before the login expired")
	}
	close(expiring)
	<-ctx.Done()
	if !expired() {
		t.Error("ctx ended but expired() is false")
	}

	var none *sources.Login
	ctx2, expired2, stop2 := none.UntilExpiring(context.Background())
	defer stop2()
	if ctx2.Err() != nil || expired2() {
		t.Error("a nil login expired")
	}
}
