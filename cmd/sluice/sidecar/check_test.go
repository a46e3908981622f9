package sidecar

import (
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/drivers"
)

func TestSourceTLSWarning(t *testing.T) {
	src := func(kind, dsn string, tls sources.TLS) SourceConfig {
		return SourceConfig{Config: sources.Config{Kind: kind, DSN: dsn, TLS: tls}, drivers: drivers.All()}
	}
	for _, c := range []struct {
		src  SourceConfig
		want string // "" = no warning
	}{
		{src("mysql", "u@tcp(127.0.0.1:3306)/shop", sources.TLS{}), ""},
		{src("mysql", "u@tcp(db.example:3306)/shop", sources.TLS{}), "source host db.example is not loopback and source.tls.mode is unset"},
		{src("mysql", "u@tcp(db.example:3306)/shop?tls=true", sources.TLS{}), ""},
		{src("postgres", "postgres://u@db.example/shop", sources.TLS{}), "source.tls.mode is prefer"},
		{src("postgres", "postgres://u@db.example/shop", sources.TLS{Mode: "verify-ca"}), "source.tls.mode is verify-ca"},
		{src("postgres", "postgres://u@db.example/shop?sslmode=verify-full", sources.TLS{}), ""},
	} {
		got := SourceTLSWarning(c.src)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%+v: %q, want %q", c.src.Config, got, c.want)
		}
	}
}
