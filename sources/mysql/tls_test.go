package mysql

import (
	"errors"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
	"github.com/sluice-cdc/sluice/sources/tlstest"
)

// A MariaDB that refuses plaintext (require_secure_transport) is captured
// over verified TLS: its query, binlog and backfill connections are all
// encrypted, since the server takes nothing else. Plaintext, an unknown
// CA and a wrong name fail as TLS failures, never as a wrong password.
func TestTLS(t *testing.T) {
	f := tlstest.New(t)
	srv := mysqltest.New(t, mysqltest.Options{TLSCert: f.ServerCert, TLSKey: f.ServerKey,
		Settings: map[string]string{"require_secure_transport": "ON"}})
	ctx := testCtx(t)
	// The helper's own connections use TLS; execSQL's would not.
	for _, q := range []string{"CREATE DATABASE shop", "CREATE TABLE shop.items (id INT PRIMARY KEY, name TEXT)", "INSERT INTO shop.items VALUES (1, 'old')"} {
		if err := srv.Exec(ctx, "", q); err != nil {
			t.Fatal(err)
		}
	}
	verified := sources.TLS{Mode: sources.TLSVerifyFull, CA: f.CA}

	t.Run("verified", func(t *testing.T) {
		var log sourcetest.Logs
		src := newTestSource(t, srv, "tls", "shop", func(c *Config) {
			c.TLS, c.Log = verified, log.Logger()
		})
		st := startStream(t, src, "")
		if err := srv.Exec(ctx, "shop", "INSERT INTO items VALUES (2, 'new')"); err != nil {
			t.Fatal(err)
		}
		if c := st.next(t, onTable("items")); string(c.KeyValues()[0]) != "2" {
			t.Errorf("streamed key %s, want 2", c.KeyValues()[0])
		}
		if l := log.String(); !strings.Contains(l, `tls="TLS 1.`) || !strings.Contains(l, "server verified (verify-full)") {
			t.Errorf("the streaming line does not describe the binlog connection's TLS:\n%s", l)
		}
		if _, rows := sourcetest.PageAll(t, ctx, src, "shop.items", 10); len(rows) != 2 {
			t.Errorf("backfill read %d rows over TLS, want 2", len(rows))
		}
	})

	t.Run("check", func(t *testing.T) {
		problems, tr := Check(ctx, Config{Name: "tls", DSN: srv.DSN("shop"), TLS: verified})
		if len(problems) > 0 || tr == nil {
			t.Fatalf("check: %q %v", problems, tr)
		}
		if s := tr.String(); !strings.HasPrefix(s, "TLS 1.") || !strings.HasSuffix(s, "server verified (verify-full)") {
			t.Errorf("transport %q", s)
		}
		// The DSN's tls= is the other place to ask for TLS.
		_, tr = Check(ctx, Config{Name: "tls", DSN: srv.DSN("shop") + "?tls=skip-verify"})
		if tr == nil || !strings.HasSuffix(tr.String(), "server not verified (require)") {
			t.Errorf("tls=skip-verify: transport %v", tr)
		}
	})

	for _, c := range []struct {
		name string
		tls  sources.TLS
		want string
	}{
		{"plaintext", sources.TLS{Mode: sources.TLSDisable}, "requires secure transport (require_secure_transport = ON)"},
		{"unset", sources.TLS{}, "requires secure transport"},
		{"unknown CA", sources.TLS{Mode: sources.TLSVerifyFull, CA: f.OtherCA}, "unknown authority"},
		{"wrong name", sources.TLS{Mode: sources.TLSVerifyFull, CA: f.CA, ServerName: tlstest.WrongName}, "name mismatch"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := New(ctx, Config{Name: "tls", DSN: srv.DSN("shop"), TLS: c.tls})
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, sources.ErrTLS) {
				t.Fatalf("got %v, want an ErrTLS with %q", err, c.want)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "password") || errors.Is(err, sources.ErrLoginRejected) || errors.Is(err, sources.ErrDisconnected) {
				t.Errorf("a TLS failure reads as a login or network problem: %v", err)
			}
		})
	}

	// verify-ca checks the chain alone: a name the certificate lacks passes.
	t.Run("verify-ca", func(t *testing.T) {
		_, tr := Check(ctx, Config{Name: "tls", DSN: srv.DSN("shop"),
			TLS: sources.TLS{Mode: sources.TLSVerifyCA, CA: f.CA, ServerName: tlstest.WrongName}})
		if tr == nil || !strings.HasSuffix(tr.String(), "server verified (verify-ca)") {
			t.Errorf("transport %v", tr)
		}
	})
}

// A DSN parameter sluice does not apply is refused by name, never dropped,
// and the error does not repeat the DSN (it holds the password).
func TestDSNParams(t *testing.T) {
	const secret = "s3cr3t"
	for _, c := range []struct {
		query string
		mode  string // the tls= mode; "" = refused
		want  string
	}{
		{"", "", ""},
		{"?tls=true", sources.TLSVerifyFull, ""},
		{"?tls=skip-verify", sources.TLSRequire, ""},
		{"?tls=false", sources.TLSDisable, ""},
		{"?tls=preferred", "", "tls=preferred falls back to plaintext"},
		{"?tls=custom", "", "tls=custom is not supported"},
		{"?parseTime=true&tls=true", "", "parameter parseTime is not supported"},
		{"?timeout=5s&charset=utf8", "", "parameter charset, timeout is not supported"},
		{"?tls=%zz", "", "not name=value pairs"},
	} {
		d, err := parseDSN("sluice:" + secret + "@tcp(db.example:3306)/shop" + c.query)
		switch {
		case c.want == "" && (err != nil || d.tlsParam != c.mode):
			t.Errorf("%s: %+v %v, want mode %q", c.query, d.tlsParam, err, c.mode)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.query, err, c.want)
		case err != nil && strings.Contains(err.Error(), secret):
			t.Errorf("%s: the error repeats the DSN: %v", c.query, err)
		}
	}
	d, _ := parseDSN("u:p@tcp(db.example:3306)/shop?tls=true")
	if err := resolveTLS(&d, sources.TLS{Mode: sources.TLSVerifyCA}); err == nil || !strings.Contains(err.Error(), "source.dsn has tls= and source.tls is set") {
		t.Errorf("tls= with source.tls: %v", err)
	}
	d, _ = parseDSN("u:p@tcp(db.example:3306)/shop")
	if err := resolveTLS(&d, sources.TLS{CA: "/etc/ca.pem"}); err == nil || !strings.Contains(err.Error(), "set source.tls.mode") {
		t.Errorf("a CA without a mode: %v", err)
	}
	if w := TLSWarning(Config{DSN: "u:p@tcp(db.example:3306)/shop?tls=skip-verify"}); !strings.Contains(w, "source.tls.mode is require") {
		t.Errorf("warning for tls=skip-verify off loopback: %q", w)
	}
	if w := TLSWarning(Config{DSN: "u:p@tcp(127.0.0.1:3306)/shop"}); w != "" {
		t.Errorf("warning on loopback: %q", w)
	}
}
