package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
	"github.com/sluice-cdc/sluice/sources/tlstest"
)

// changes hands a stream's changes to a channel.
type changes chan *sources.Change

func (c changes) Change(ctx context.Context, ch *sources.Change) error {
	select {
	case c <- ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (changes) Commit(context.Context, sources.Commit) error { return nil }

// A server whose pg_hba.conf admits TLS only is captured over verified
// TLS, replication connection included; plaintext, an unknown CA and a
// wrong name fail as TLS failures, not as a wrong password.
func TestTLS(t *testing.T) {
	f := tlstest.New(t)
	srv := pgtest.New(t, pgtest.Options{TLSCert: f.ServerCert, TLSKey: f.ServerKey, TLSOnly: true})
	ctx := testCtx(t)
	if err := srv.Exec(ctx, "postgres", "CREATE TABLE items (id int PRIMARY KEY, name text)"); err != nil {
		t.Fatal(err)
	}
	// The helper's DSN asks for sslmode itself; source.tls must be alone.
	dsn := strings.Replace(srv.DSN("postgres"), "?sslmode=require", "", 1)
	verified := sources.TLS{Mode: sources.TLSVerifyFull, CA: f.CA}

	t.Run("verified", func(t *testing.T) {
		var log sourcetest.Logs
		src, err := New(ctx, Config{Name: "tls", DSN: dsn, Tables: []string{"public.items"}, TLS: verified, Log: log.Logger()})
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		ch := make(changes, 10)
		go func() { done <- src.Stream(sctx, "", ch) }()
		t.Cleanup(func() {
			cancel()
			<-done
			src.Close(context.Background())
		})
		if err := srv.Exec(ctx, "postgres", "INSERT INTO items VALUES (7, 'x')"); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-ch:
			if string(c.KeyValues()[0]) != "7" {
				t.Errorf("streamed key %s, want 7", c.KeyValues()[0])
			}
		case err := <-done:
			t.Fatalf("stream ended: %v", err)
		case <-ctx.Done():
			t.Fatal("no change streamed")
		}
		if l := log.String(); !strings.Contains(l, `tls="TLS 1.3`) || !strings.Contains(l, "server verified (verify-full)") {
			t.Errorf("the streaming line does not describe the replication connection's TLS:\n%s", l)
		}
	})

	t.Run("check", func(t *testing.T) {
		problems, _, tr := Check(ctx, Config{Name: "tls", DSN: dsn, Tables: []string{"public.items"}, TLS: verified})
		if tr == nil || !strings.HasPrefix(tr.String(), "TLS 1.3, ") || !strings.HasSuffix(tr.String(), "server verified (verify-full)") {
			t.Errorf("transport %v (problems %q)", tr, problems)
		}
		// Nothing in source.tls: the DSN's sslmode rules, and is reported.
		_, _, tr = Check(ctx, Config{Name: "tls", DSN: srv.DSN("postgres"), Tables: []string{"public.items"}})
		if tr == nil || !strings.HasSuffix(tr.String(), "server not verified (require)") {
			t.Errorf("sslmode=require: transport %v", tr)
		}
	})

	for _, c := range []struct {
		name string
		dsn  string
		tls  sources.TLS
		want string
	}{
		{"plaintext", dsn, sources.TLS{Mode: sources.TLSDisable}, "refused a plaintext connection"},
		{"unknown CA", dsn, sources.TLS{Mode: sources.TLSVerifyFull, CA: f.OtherCA}, "unknown authority"},
		{"wrong name", dsn, sources.TLS{Mode: sources.TLSVerifyFull, CA: f.CA, ServerName: tlstest.WrongName}, "name mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(ctx, Config{Name: "tls", DSN: c.dsn, Tables: []string{"public.items"}, TLS: c.tls})
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, sources.ErrTLS) {
				t.Fatalf("got %v, want an ErrTLS with %q", err, c.want)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "password") || errors.Is(err, sources.ErrLoginRejected) || errors.Is(err, sources.ErrDisconnected) {
				t.Errorf("a TLS failure reads as a login or network problem: %v", err)
			}
		})
	}

	t.Run("both places", func(t *testing.T) {
		_, err := New(ctx, Config{Name: "tls", DSN: srv.DSN("postgres"), Tables: []string{"public.items"}, TLS: verified})
		if err == nil || !strings.Contains(err.Error(), "source.dsn sets sslmode and source.tls is set") {
			t.Errorf("sslmode and source.tls: %v", err)
		}
	})
}

func TestTLSParams(t *testing.T) {
	for _, c := range []struct {
		dsn  string
		ssl  string // sslParams joined
		mode string // tlsMode without source.tls
	}{
		{"postgres://u:p@db.example/shop", "", "prefer"},
		{"postgres://u:p@db.example/shop?sslmode=verify-full&sslrootcert=/ca.pem", "sslmode,sslrootcert", "verify-full"},
		{"host=db.example user=u sslmode=require", "sslmode", "require"},
		{"host=db.example password='a b\\' sslmode=disable' sslmode = verify-ca", "sslmode", "verify-ca"},
	} {
		t.Setenv("PGSSLMODE", "")
		if got := strings.Join(sslParams(c.dsn), ","); got != c.ssl {
			t.Errorf("%s: ssl params %q, want %q", c.dsn, got, c.ssl)
		}
		if got := tlsMode(Config{DSN: c.dsn}); got != c.mode {
			t.Errorf("%s: mode %q, want %q", c.dsn, got, c.mode)
		}
	}
	if w := TLSWarning(Config{DSN: "postgres://u@db.example/shop"}); !strings.Contains(w, "source.tls.mode is prefer") {
		t.Errorf("warning for the default off loopback: %q", w)
	}
	if w := TLSWarning(Config{DSN: "postgres://u@db.example/shop", TLS: sources.TLS{Mode: "verify-full"}}); w != "" {
		t.Errorf("warning for verify-full: %q", w)
	}
	if w := TLSWarning(Config{DSN: "postgres://u@127.0.0.1/shop?sslmode=disable"}); w != "" {
		t.Errorf("warning on loopback: %q", w)
	}
}
