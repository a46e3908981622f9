package mysql

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"

	"github.com/sluice-cdc/sluice/sources"
)

// at is d pointed at host h, with h's own TLS server name.
func (d dsn) at(h hostPort) (dsn, error) {
	d.host, d.port = h.host, h.port
	cfg, err := d.tlsSettings.ClientConfig(h.host)
	if err != nil {
		return d, err
	}
	d.tls = cfg
	return d, nil
}

// multiHost tells whether source.dsn lists several servers: only then is
// a read-only server passed over, so that a single DSN may still name a
// replica to capture from (with log_slave_updates).
func (d dsn) multiHost() bool { return len(d.hosts) > 1 }

// connectPrimary connects to the server to read from. With one host that
// is the host. With several, it is the first that answers and is writable
// (@@read_only = 0), as libpq's target_session_attrs=read-write chooses:
// after a failover only the promoted server is. current, when it is one
// of the hosts, is tried first, so that sluice does not move while the
// server it reads stays writable.
func connectPrimary(ctx context.Context, d dsn, current hostPort) (*client.Conn, dsn, error) {
	if !d.multiHost() {
		conn, err := connect(ctx, d)
		return conn, d, err
	}
	order := make([]hostPort, 0, len(d.hosts))
	for _, h := range d.hosts {
		if h == current {
			order = append(order, h)
		}
	}
	for _, h := range d.hosts {
		if h != current {
			order = append(order, h)
		}
	}
	var reasons []string
	var fatal error // the first failure that retrying will not cure
	for _, h := range order {
		hd, err := d.at(h)
		if err != nil {
			return nil, d, err
		}
		conn, err := connectWritable(ctx, hd)
		if err == nil {
			return conn, hd, nil
		}
		if ctx.Err() != nil {
			return nil, d, ctx.Err()
		}
		if !errors.Is(err, sources.ErrDisconnected) && fatal == nil {
			fatal = err
			continue
		}
		reasons = append(reasons, err.Error())
	}
	if fatal != nil {
		if len(reasons) == 0 {
			return nil, d, fatal
		}
		return nil, d, fmt.Errorf("%w (the other hosts of source.dsn: %s)", fatal, strings.Join(reasons, "; "))
	}
	return nil, d, fmt.Errorf("%w: none of the %d hosts of source.dsn is a writable primary: %s: promote one (SET GLOBAL read_only = OFF) or bring the primary back; sluice retries",
		sources.ErrDisconnected, len(d.hosts), strings.Join(reasons, "; "))
}

// connectWritable connects to d's host and, when source.dsn lists several,
// makes sure that it is writable: a read-only one is a replica (or a
// demoted primary) whose binlog may stop at any time. Its refusal is a
// disconnect: a promotion, or the primary's return, cures it.
func connectWritable(ctx context.Context, d dsn) (*client.Conn, error) {
	conn, err := connect(ctx, d)
	if err != nil || !d.multiHost() {
		return conn, err
	}
	if err := checkWritable(conn, d); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// checkWritable reads @@read_only on conn, which is d's.
func checkWritable(conn *client.Conn, d dsn) error {
	r, err := conn.Execute("SELECT @@GLOBAL.read_only")
	if err != nil {
		return fmt.Errorf("%w: MySQL at %s: cannot read @@read_only: %w", sources.ErrDisconnected, d.addr(), classify(err))
	}
	v, _ := r.GetString(0, 0)
	// MariaDB 11 reports read_only as OFF/ON/NO_LOCK/NO_LOCK_NO_ADMIN.
	if n, err := strconv.Atoi(v); (err == nil && n == 0) || strings.EqualFold(v, "OFF") {
		return nil
	}
	return fmt.Errorf("%w: MySQL at %s is read-only (@@read_only = %s): a replica, or a demoted primary", sources.ErrDisconnected, d.addr(), v)
}

// checkHasGTIDs tells whether the server on conn logged every transaction
// up to the checkpoint start. A replica promoted before it applied all of
// the old primary's transactions lacks some: streaming from it would skip
// them without a word (MariaDB accepts a start position past its own
// binlog's end), so that is a lost position, repaired by a backfill. A
// purged binlog is not found here: the server's GTID state still holds
// it, and the binlog dump reports it.
func checkHasGTIDs(conn *client.Conn, info serverInfo, start position, addr string) error {
	if start.gtid == nil || start.gtid.IsEmpty() {
		return nil
	}
	if info.flavor == mysql.MariaDBFlavor {
		r, err := conn.Execute("SELECT @@GLOBAL.gtid_binlog_state")
		if err != nil {
			return fmt.Errorf("read the server's GTID state (gtid_binlog_state): %w", err)
		}
		state, _ := r.GetString(0, 0)
		missing, err := mariadbMissing(state, start.gtid)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return fmt.Errorf("%w: MariaDB at %s lacks %s of the checkpoint (its binlog holds %s): it did not log every transaction sluice read, as a replica promoted before it caught up, or one without log_slave_updates; the changes in between are backfilled",
				sources.ErrLogLost, addr, strings.Join(missing, ","), state)
		}
		return nil
	}
	r, err := conn.Execute("SELECT @@GLOBAL.gtid_executed")
	if err != nil {
		return fmt.Errorf("read the server's GTID set (gtid_executed): %w", err)
	}
	executed, _ := r.GetString(0, 0)
	set, err := mysql.ParseGTIDSet(info.flavor, executed)
	if err != nil {
		return fmt.Errorf("server GTID set %q: %w", executed, err)
	}
	if !set.Contain(start.gtid) {
		return fmt.Errorf("%w: MySQL at %s lacks transactions of the checkpoint %s (it has executed %s): it did not log every transaction sluice read, as a replica promoted before it caught up; the changes in between are backfilled",
			sources.ErrLogLost, addr, start.gtid, executed)
	}
	return nil
}

// mariadbMissing lists the GTIDs of checkpoint that a MariaDB binlog state
// ("domain-server-seq" for the last transaction of each domain and server)
// does not reach. A GTID keeps the server id of the server that first
// ran it, on every replica, so the checkpoint's GTID is looked up by
// domain and server.
func mariadbMissing(state string, checkpoint mysql.GTIDSet) ([]string, error) {
	type origin struct{ domain, server uint32 }
	last := map[origin]uint64{}
	if state != "" {
		for _, s := range strings.Split(state, ",") {
			g, err := mysql.ParseMariadbGTID(strings.TrimSpace(s))
			if err != nil {
				return nil, fmt.Errorf("server GTID state %q: %w", state, err)
			}
			last[origin{g.DomainID, g.ServerID}] = g.SequenceNumber
		}
	}
	set, ok := checkpoint.(*mysql.MariadbGTIDSet)
	if !ok {
		return nil, fmt.Errorf("checkpoint %s is not a MariaDB GTID position", checkpoint)
	}
	var missing []string
	for _, g := range set.Sets {
		if seq, ok := last[origin{g.DomainID, g.ServerID}]; !ok || seq < g.SequenceNumber {
			missing = append(missing, g.String())
		}
	}
	slices.Sort(missing)
	return missing, nil
}
