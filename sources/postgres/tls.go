package postgres

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluice-cdc/sluice/sources"
)

// applyTLS puts source.tls onto a parsed configuration. Without it the
// DSN's sslmode (libpq's rules, default prefer) stays in force. With it,
// every host gets exactly source.tls: pgx's plaintext fallback of prefer
// is dropped, so a mode that asks for TLS never ends in plaintext.
func applyTLS(pc *pgconn.Config, c Config) error {
	if c.TLS.IsZero() {
		return nil
	}
	if names := sslParams(c.DSN); len(names) > 0 {
		return fmt.Errorf("source.dsn sets %s and source.tls is set: set TLS in one place, either remove %s from source.dsn or remove the source.tls block",
			strings.Join(names, ", "), strings.Join(names, ", "))
	}
	if err := c.TLS.NeedsMode(); err != nil {
		return err
	}
	var err error
	if pc.TLSConfig, err = c.TLS.ClientConfig(pc.Host); err != nil {
		return err
	}
	if isSocket(pc.Host) {
		pc.TLSConfig = nil // a Unix socket never carries TLS
	}
	seen := map[string]bool{net.JoinHostPort(pc.Host, strconv.Itoa(int(pc.Port))): true}
	var fallbacks []*pgconn.FallbackConfig
	for _, fb := range pc.Fallbacks {
		addr := net.JoinHostPort(fb.Host, strconv.Itoa(int(fb.Port)))
		if seen[addr] {
			continue // prefer's plaintext retry of a host already tried
		}
		seen[addr] = true
		if fb.TLSConfig, err = c.TLS.ClientConfig(fb.Host); err != nil {
			return err
		}
		if isSocket(fb.Host) {
			fb.TLSConfig = nil
		}
		fallbacks = append(fallbacks, fb)
	}
	pc.Fallbacks = fallbacks
	return nil
}

// tlsMode is the mode c's connections are made in: source.tls.mode, or
// the DSN's sslmode, or libpq's default.
func tlsMode(c Config) string {
	if c.TLS.Mode != "" {
		return c.TLS.Mode
	}
	if m, ok := sslMode(c.DSN); ok {
		return m
	}
	if m := os.Getenv("PGSSLMODE"); m != "" {
		return m
	}
	return "prefer"
}

// TLSWarning is the warning sluice run logs and sluice check prints for
// cfg's transport, "" when there is none (or when the DSN is invalid:
// connecting reports that).
func TLSWarning(cfg Config) string {
	pc, err := pgconn.ParseConfig(cfg.DSN)
	if err != nil {
		return ""
	}
	return sources.TLSWarning(pc.Host, tlsMode(cfg))
}

// transportOf describes conn's socket.
func transportOf(conn *pgx.Conn, c Config) sources.Transport {
	return sources.TransportOf(conn.PgConn().Conn(), tlsMode(c))
}

func isSocket(host string) bool { return strings.HasPrefix(host, "/") }

// sslParams names the TLS parameters a DSN sets itself.
func sslParams(dsn string) []string {
	params, _ := dsnParams(dsn)
	var names []string
	for k := range params {
		if strings.HasPrefix(k, "ssl") {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	return names
}

func sslMode(dsn string) (string, bool) {
	params, _ := dsnParams(dsn)
	m, ok := params["sslmode"]
	return m, ok
}

// dsnParams reads the parameters of a URL or keyword/value DSN, for the
// few that sluice must see before pgx does. pgx remains the parser of
// record: a DSN it refuses is reported by connecting.
func dsnParams(dsn string) (map[string]string, error) {
	params := map[string]string{}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, errors.New("not a URL")
		}
		for k, v := range u.Query() {
			params[k] = v[len(v)-1]
		}
		return params, nil
	}
	s := dsn
	for {
		s = strings.TrimLeft(s, " \t\n\r")
		if s == "" {
			return params, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq < 0 {
			return nil, errors.New("not key=value")
		}
		key := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t\n\r")
		var val strings.Builder
		if strings.HasPrefix(s, "'") {
			i := 1
			for ; i < len(s) && s[i] != '\''; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
			}
			s = s[min(i+1, len(s)):]
		} else {
			end := strings.IndexAny(s, " \t\n\r")
			if end < 0 {
				end = len(s)
			}
			val.WriteString(s[:end])
			s = s[end:]
		}
		params[key] = val.String()
	}
}
