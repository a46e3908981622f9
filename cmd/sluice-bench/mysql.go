package main

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
)

// mysqlBench is a private MariaDB with the bench table.
type mysqlBench struct {
	srv    *mysqltest.Server
	flavor string
	conn   *client.Conn // loads
	one    *client.Conn // latency writes
}

func startMySQL(ctx context.Context, dir string, rowBytes int) (*mysqlBench, error) {
	srv, err := mysqltest.Start(ctx, mysqltest.Options{Dir: filepath.Join(dir, "my")})
	if err != nil {
		return nil, err
	}
	b := &mysqlBench{srv: srv, flavor: mysql.MariaDBFlavor}
	if err := b.setup(ctx, rowBytes); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *mysqlBench) setup(ctx context.Context, rowBytes int) error {
	if err := b.srv.CreateDatabase(ctx, "bench"); err != nil {
		return err
	}
	var err error
	if b.conn, err = client.Connect(b.srv.Addr(), "root", "", "bench"); err != nil {
		return err
	}
	if b.one, err = client.Connect(b.srv.Addr(), "root", "", "bench"); err != nil {
		return err
	}
	r, err := b.conn.Execute("SELECT VERSION()")
	if err != nil {
		return err
	}
	if v, _ := r.GetString(0, 0); !strings.Contains(strings.ToLower(v), "mariadb") {
		b.flavor = mysql.MySQLFlavor
	}
	_, err = b.conn.Execute(fmt.Sprintf("CREATE TABLE bench (id BIGINT PRIMARY KEY, payload VARCHAR(%d) NOT NULL)", max(rowBytes, 16)))
	return err
}

func (b *mysqlBench) close() {
	for _, c := range []*client.Conn{b.conn, b.one} {
		if c != nil {
			c.Close()
		}
	}
	b.srv.Stop()
}

func (b *mysqlBench) sourceYAML() string {
	return fmt.Sprintf("{name: %s, kind: mysql, dsn: %q, tables: [%s]}", benchSource, b.srv.DSN("bench"), b.table())
}

func (b *mysqlBench) table() string { return "bench.bench" }

// payload is n bytes that differ per row, like the PostgreSQL payload.
func payload(id, n int) string {
	sum := md5.Sum([]byte(strconv.Itoa(id)))
	h := hex.EncodeToString(sum[:])
	return strings.Repeat(h, n/len(h)+1)[:n]
}

// insertSQL is one multi-row INSERT of rows [from, from+n).
func insertSQL(buf []byte, from, n, rowBytes int) []byte {
	buf = append(buf[:0], "INSERT INTO bench VALUES "...)
	for i := range n {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, '(')
		buf = strconv.AppendInt(buf, int64(from+i), 10)
		buf = append(buf, ",'"...)
		buf = append(buf, payload(from+i, rowBytes-8)...)
		buf = append(buf, "')"...)
	}
	return buf
}

func (b *mysqlBench) load(ctx context.Context, from, n, txSize, rowBytes int, progress func(int)) error {
	var buf []byte
	for done := 0; done < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := min(txSize, n-done)
		buf = insertSQL(buf, from+done, k, rowBytes)
		if _, err := b.conn.Execute(string(buf)); err != nil {
			return fmt.Errorf("load rows: %w", err)
		}
		done += k
		progress(k)
	}
	return nil
}

// bigTx commits n rows in one transaction, written 1,000 rows a statement.
func (b *mysqlBench) bigTx(ctx context.Context, from, n, rowBytes int) error {
	if err := b.conn.Begin(); err != nil {
		return err
	}
	var buf []byte
	for done := 0; done < n; {
		if err := ctx.Err(); err != nil {
			_ = b.conn.Rollback()
			return err
		}
		k := min(1000, n-done)
		buf = insertSQL(buf, from+done, k, rowBytes)
		if _, err := b.conn.Execute(string(buf)); err != nil {
			_ = b.conn.Rollback()
			return err
		}
		done += k
	}
	return b.conn.Commit()
}

func (b *mysqlBench) insertOne(_ context.Context, id int, payload string) error {
	_, err := b.one.Execute("INSERT INTO bench VALUES (" + strconv.Itoa(id) + ",'" + payload + "')")
	return err
}

// prepareBaseline notes the binlog position before the backlog is written,
// so the bare reader starts where sluice's checkpoint is.
func (b *mysqlBench) prepareBaseline(ctx context.Context) (baseline, error) {
	r, err := b.conn.Execute("SHOW MASTER STATUS")
	if err != nil {
		return nil, err
	}
	file, _ := r.GetString(0, 0)
	pos, _ := r.GetUint(0, 1)
	if file == "" {
		return nil, fmt.Errorf("SHOW MASTER STATUS returned no binlog position: is log_bin on?")
	}
	return &binlogReader{b: b, pos: mysql.Position{Name: file, Pos: uint32(pos)}}, nil
}

// binlogReader is a bare go-mysql BinlogSyncer, decoding every rows event
// (go-mysql's default) and doing nothing with it.
type binlogReader struct {
	b   *mysqlBench
	pos mysql.Position
}

func (r *binlogReader) name() string { return "go-mysql BinlogSyncer" }

func (r *binlogReader) read(ctx context.Context, n int) (time.Duration, error) {
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID: 4_000_000_001,
		Flavor:   r.b.flavor,
		Host:     "127.0.0.1",
		Port:     uint16(r.b.srv.Port()),
		User:     "root",
		Logger:   discardLogger(),
	})
	defer syncer.Close()
	start := time.Now()
	streamer, err := syncer.StartSync(r.pos)
	if err != nil {
		return 0, fmt.Errorf("start binlog sync at %s: %w", r.pos, err)
	}
	rows := 0
	for rows < n {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			return 0, fmt.Errorf("read binlog after %d rows: %w", rows, err)
		}
		if re, ok := ev.Event.(*replication.RowsEvent); ok && string(re.Table.Table) == "bench" {
			rows += len(re.Rows)
		}
	}
	return time.Since(start), nil
}
