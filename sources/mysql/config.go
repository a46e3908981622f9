// Package mysql is the MySQL and MariaDB source: it reads the binlog (ROW
// format) with go-mysql's BinlogSyncer, by GTID or by file and offset.
package mysql

import (
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-cdc/sluice/sources"
)

// Config configures a MySQL or MariaDB source.
type Config struct {
	Name string // source name
	// DSN is "user:password@tcp(host:port)/database" (the go-sql-driver form).
	DSN    string
	Tables []string // db.table; empty = every table with a primary key in the DSN's database
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
	Log         *slog.Logger
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
	user, password, host string
	port                 uint16
	db                   string
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
	host, port, err := net.SplitHostPort(rest[4:end])
	if err != nil {
		host, port = rest[4:end], "3306"
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return d, fmt.Errorf("source.dsn: port %q is not a number", port)
	}
	d.host, d.port = host, uint16(p)
	db := strings.TrimPrefix(rest[end+1:], "/")
	d.db, _, _ = strings.Cut(db, "?")
	if d.user == "" {
		return d, fmt.Errorf("source.dsn: no user")
	}
	return d, nil
}
