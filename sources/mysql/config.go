// Package mysql is the MySQL and MariaDB source: it reads the binlog (ROW
// format) with go-mysql's BinlogSyncer, by GTID or by file and offset.
package mysql

import (
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// Config configures a MySQL or MariaDB source.
type Config struct {
	Name string // source name
	// DSN is "user:password@tcp(host:port)/database" (the go-sql-driver
	// form), or with several hosts "user:password@tcp(h1:3306,h2:3306)/db":
	// sluice then reads from the first writable one (see connectPrimary).
	DSN string
	// Tables are db.table names or patterns (sources.TableSet); empty =
	// every table with a key in the DSN's database.
	Tables []string
	// Exclude removes the tables its names or patterns match.
	Exclude []string
	// Keys gives the key columns of tables without a primary key.
	Keys map[string][]string
	// ServerID identifies sluice as a replica; it must differ from every
	// server and replica of the topology. 0 derives it from Name.
	ServerID uint32
	// Positions chooses how positions are kept: "gtid", "file" (binlog
	// file and offset), or "auto" / "" (GTID when the server has it).
	Positions string
	// HeartbeatPeriod asks the server for heartbeats, so an idle server is
	// told apart from a dead connection.
	HeartbeatPeriod time.Duration
	// Credentials, when set, supply the user and password on every
	// connect; the DSN's own are ignored.
	Credentials sources.Credentials
	// SignalTable is the backfill's watermark table, "db.table"; sluice
	// creates it when missing. Empty means "<DSN database>.sluice_signal"
	// (or the first captured table's database when the DSN names none).
	SignalTable string
	// TLS is source.tls. Unset, and with no tls= in the DSN, connections
	// are plaintext as MySQL clients' own default is; TLS may be set in
	// one of the two places, not both.
	TLS sources.TLS
	// OnTableAdded, when set, is told of a table that a pattern of Tables
	// matched while sluice runs, once it is captured: from its first
	// rows in the binlog that follow. It must not block.
	OnTableAdded func(table string)
	Log          *slog.Logger
}

// DefaultServerID derives a replica server id from a source name: FNV-1a
// 32 of the name, folded into 1001..2^31-1 to stay clear of the small ids
// servers are usually given.
func DefaultServerID(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return 1001 + h.Sum32()%(1<<31-1002)
}

// dsn is a parsed connection string.
type dsn struct {
	user, password string
	// host and port are the server in use; hosts lists every server of
	// source.dsn in order and never changes after parsing.
	host  string
	port  uint16
	hosts []hostPort
	db    string
	// tlsParam is the DSN's tls= as a sources mode, "" when absent.
	tlsParam string
	// mode and tls are what every connection uses, query and binlog
	// alike, once resolveTLS has merged the DSN with source.tls.
	mode string
	tls  *tls.Config
	// tlsSettings is the merged TLS setting, for the tls.Config of each
	// host: its server name differs.
	tlsSettings sources.TLS
}

func (d dsn) addr() string { return net.JoinHostPort(d.host, strconv.Itoa(int(d.port))) }

// parseDSN reads "user:password@tcp(host:port)/db[?params]". Errors never
// repeat the DSN: it may hold a password.
func parseDSN(s string) (dsn, error) {
	var d dsn
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return d, fmt.Errorf(`source.dsn: want "user:password@tcp(host:port)/database"`)
	}
	cred, rest := s[:at], s[at+1:]
	d.user, d.password, _ = strings.Cut(cred, ":")
	if !strings.HasPrefix(rest, "tcp(") {
		return d, fmt.Errorf(`source.dsn: the address must be tcp(host:port), as in "user:password@tcp(127.0.0.1:3306)/shop"`)
	}
	end := strings.Index(rest, ")")
	if end < 0 {
		return d, fmt.Errorf("source.dsn: unclosed tcp(")
	}
	hosts, err := parseHosts(rest[4:end])
	if err != nil {
		return d, err
	}
	d.hosts = hosts
	d.host, d.port = hosts[0].host, hosts[0].port
	db := strings.TrimPrefix(rest[end+1:], "/")
	db, query, _ := strings.Cut(db, "?")
	d.db = db
	if d.user == "" {
		return d, fmt.Errorf("source.dsn: no user")
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return d, errors.New("source.dsn: the parameters after '?' are not name=value pairs joined by '&'")
	}
	var unknown []string
	for name := range params {
		if name != "tls" {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		// Dropping a parameter would quietly run without what it asked for.
		return d, fmt.Errorf("source.dsn: parameter %s is not supported: remove it (sluice reads only tls=; other settings have their own keys, TLS files are under source.tls)",
			strings.Join(unknown, ", "))
	}
	if v, ok := params["tls"]; ok {
		if d.tlsParam, err = dsnTLSMode(v[len(v)-1]); err != nil {
			return d, err
		}
	}
	return d, nil
}

// dsnTLSMode maps go-sql-driver's tls= values onto the sources modes.
func dsnTLSMode(v string) (string, error) {
	switch v {
	case "true":
		return sources.TLSVerifyFull, nil
	case "skip-verify":
		return sources.TLSRequire, nil
	case "false":
		return sources.TLSDisable, nil
	case "preferred":
		return "", errors.New("source.dsn: tls=preferred falls back to plaintext without a word, which sluice never does: use tls=true (verified), tls=skip-verify, or source.tls.mode")
	}
	return "", fmt.Errorf("source.dsn: tls=%s is not supported: use tls=true (verify-full), tls=skip-verify (require) or tls=false, or source.tls for a CA, a client certificate or verify-ca", v)
}

// resolveTLS decides the TLS of d's connections: the DSN's tls= or
// source.tls, never both, since which should win is a guess.
func resolveTLS(d *dsn, t sources.TLS) error {
	if d.tlsParam != "" {
		if !t.IsZero() {
			return errors.New("source.dsn has tls= and source.tls is set: set TLS in one place, either remove tls= from source.dsn or remove the source.tls block")
		}
		t.Mode = d.tlsParam
	}
	if err := t.NeedsMode(); err != nil {
		return err
	}
	cfg, err := t.ClientConfig(d.host)
	if err != nil {
		return err
	}
	d.mode, d.tls, d.tlsSettings = t.Mode, cfg, t
	if d.mode == "" {
		d.mode = sources.TLSDisable
	}
	return nil
}

// parseConfig reads cfg's DSN and settles its TLS.
func parseConfig(cfg Config) (dsn, error) {
	d, err := parseDSN(cfg.DSN)
	if err != nil {
		return d, err
	}
	return d, resolveTLS(&d, cfg.TLS)
}

// TLSWarning is the warning sluice run logs and sluice check prints for
// cfg's transport, "" when there is none (or when the DSN is invalid:
// connecting reports that).
func TLSWarning(cfg Config) string {
	d, err := parseDSN(cfg.DSN)
	if err != nil {
		return ""
	}
	mode := d.tlsParam
	if mode == "" {
		mode = cfg.TLS.Mode
	}
	for _, h := range d.hosts {
		if w := sources.TLSWarning(h.host, mode); w != "" {
			return w
		}
	}
	return ""
}

// hostPort is one server of source.dsn.
type hostPort struct {
	host string
	port uint16
}

func (h hostPort) String() string { return net.JoinHostPort(h.host, strconv.Itoa(int(h.port))) }

// parseHosts reads the inside of tcp(...): "host[:port]" or several joined
// by commas. A lone host may be a bare IPv6 address, as before; among
// several, an address with colons must be bracketed ([::1]:3306), or
// where its port starts is a guess.
func parseHosts(s string) ([]hostPort, error) {
	parts := strings.Split(s, ",")
	hosts := make([]hostPort, 0, len(parts))
	for _, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, errors.New(`source.dsn: an empty host in tcp(...): list hosts as tcp(host1:3306,host2:3306)`)
		}
		host, port, err := net.SplitHostPort(part)
		switch {
		case err == nil && host == "":
			return nil, fmt.Errorf("source.dsn: %q names no host", part)
		case err == nil:
		case !strings.Contains(part, ":") || len(parts) == 1:
			host, port = part, "3306"
		case strings.HasPrefix(part, "[") && strings.HasSuffix(part, "]"):
			host, port = part[1:len(part)-1], "3306"
		default:
			return nil, fmt.Errorf("source.dsn: %q among several hosts is ambiguous: write an IPv6 address in brackets with its port, as [::1]:3306", part)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("source.dsn: port %q is not a number from 1 to 65535", port)
		}
		h := hostPort{host: host, port: uint16(p)}
		if slices.Contains(hosts, h) {
			return nil, fmt.Errorf("source.dsn: host %s is listed twice", h)
		}
		hosts = append(hosts, h)
	}
	return hosts, nil
}
