// Command sluice-demo shows sluice end to end on a fresh machine: it starts
// a private PostgreSQL with logical replication (or, with --mysql, a private
// MariaDB with a ROW binlog), runs `sluice run` on its
// embedded NATS, writes sample rows, and prints the events `sluice tail`
// receives. Everything it starts lives in a temp dir and stops at the end.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/go-mysql-org/go-mysql/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/proctest"
)

func main() {
	bin := flag.String("sluice", "bin/sluice", "path of the sluice binary")
	useMySQL := flag.Bool("mysql", false, "capture a private MariaDB instead of PostgreSQL")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	db := postgresDemo
	if *useMySQL {
		db = mysqlDemo
	}
	if err := demo(ctx, *bin, db); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// database is one kind of database the demo can start and write to.
type database struct {
	name, kind, source string
	tables             []string
	schema             []string
	// writes are the sample transactions, with what each should produce.
	writes []struct {
		stmts  []string
		events string
	}
	start func(ctx context.Context, dir string) (dsn string, tx func([]string) error, stop func(), err error)
}

var postgresDemo = database{
	name: "PostgreSQL 15 with wal_level=logical", kind: "postgres", source: "pg1",
	tables: []string{"public.customers", "public.orders"},
	schema: []string{`CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text)`,
		`CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), amount numeric(10,2) NOT NULL,
			status text NOT NULL DEFAULT 'new', tags text[], created_at timestamptz NOT NULL DEFAULT now())`},
	writes: []struct {
		stmts  []string
		events string
	}{
		{[]string{`INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com')`}, "2 creates"},
		{[]string{`INSERT INTO orders (customer_id, amount, tags) VALUES (1, 19.99, '{gift,express}'), (2, 5.00, NULL)`}, "2 creates"},
		{[]string{`UPDATE orders SET status = 'paid' WHERE id = 1`}, "1 update"},
		{[]string{`UPDATE orders SET status = 'shipped' WHERE id = 1`, `DELETE FROM orders WHERE id = 2`}, "1 update, 1 delete"},
	},
	start: func(ctx context.Context, dir string) (string, func([]string) error, func(), error) {
		pg, err := pgtest.Start(ctx, pgtest.Options{Dir: filepath.Join(dir, "pg")})
		if err != nil {
			return "", nil, nil, err
		}
		if err := pg.CreateDatabase(ctx, "shop"); err != nil {
			pg.Stop()
			return "", nil, nil, err
		}
		tx := func(stmts []string) error {
			return pg.Exec(ctx, "shop", "BEGIN; "+strings.Join(stmts, "; ")+"; COMMIT")
		}
		return pg.DSN("shop"), tx, func() { pg.Stop() }, nil
	},
}

var mysqlDemo = database{
	name: "MariaDB with a ROW binlog and GTIDs", kind: "mysql", source: "my1",
	tables: []string{"shop.customers", "shop.orders"},
	schema: []string{`CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, email VARCHAR(200))`,
		`CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2) NOT NULL,
			status VARCHAR(20) NOT NULL DEFAULT 'new', tags JSON, created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))`},
	writes: []struct {
		stmts  []string
		events string
	}{
		{[]string{`INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com')`}, "2 creates"},
		{[]string{`INSERT INTO orders (customer_id, amount, tags) VALUES (1, 19.99, '["gift", "express"]'), (2, 5.00, NULL)`}, "2 creates"},
		{[]string{`UPDATE orders SET status = 'paid' WHERE id = 1`}, "1 update"},
		{[]string{`UPDATE orders SET status = 'shipped' WHERE id = 1`, `DELETE FROM orders WHERE id = 2`}, "1 update, 1 delete"},
	},
	start: func(ctx context.Context, dir string) (string, func([]string) error, func(), error) {
		my, err := mysqltest.Start(ctx, mysqltest.Options{Dir: filepath.Join(dir, "my")})
		if err != nil {
			return "", nil, nil, err
		}
		if err := my.CreateDatabase(ctx, "shop"); err != nil {
			my.Stop()
			return "", nil, nil, err
		}
		conn, err := client.Connect(my.Addr(), "root", "", "shop")
		if err != nil {
			my.Stop()
			return "", nil, nil, err
		}
		tx := func(stmts []string) error {
			if err := conn.Begin(); err != nil {
				return err
			}
			for _, s := range stmts {
				if _, err := conn.Execute(s); err != nil {
					_ = conn.Rollback()
					return err
				}
			}
			return conn.Commit()
		}
		return my.DSN("shop"), tx, func() { conn.Close(); my.Stop() }, nil
	},
}

const wantEvents = 7

func demo(ctx context.Context, bin string, db database) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("sluice binary %s: %w (run `make build` first)", bin, err)
	}
	bin, _ = filepath.Abs(bin)
	dir, err := os.MkdirTemp("", "sluice-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("starting a private " + db.name)
	dsn, tx, stopDB, err := db.start(ctx, dir)
	if err != nil {
		return err
	}
	defer stopDB()
	for _, stmt := range db.schema {
		if err := tx([]string{stmt}); err != nil {
			return err
		}
	}

	natsPort, err := proctest.FreePort()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	cfg := fmt.Sprintf(`source: {name: %s, kind: %s, dsn: %q, tables: [%s]}
nats:   {listen: "127.0.0.1:%d", store_dir: %q}
stream: {subject_prefix: cdc, partitions: 8, replicas: 1}
backfill: {initial: false}   # the demo's tables start empty: no initial snapshot to show
`, db.source, db.kind, dsn, strings.Join(db.tables, ", "), natsPort, filepath.Join(dir, "nats"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	step("config " + cfgPath + ":\n" + indent(cfg))

	step("starting: sluice run --config " + cfgPath)
	run := exec.Command(bin, "run", "--config", cfgPath)
	run.Stderr = prefixed("  [sluice run] ")
	if err := run.Start(); err != nil {
		return err
	}
	defer func() {
		if run.ProcessState == nil {
			_ = run.Process.Kill()
			_ = run.Wait()
		}
	}()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", natsPort)
	if err := waitPort(ctx, natsPort, 30*time.Second); err != nil {
		return fmt.Errorf("sluice did not start its NATS server: %w", err)
	}

	step(fmt.Sprintf("following the events: sluice tail --nats %s --count %d 'cdc.>'", natsURL, wantEvents))
	tail := exec.CommandContext(ctx, bin, "tail", "--nats", natsURL, "--from-start", "--count", fmt.Sprint(wantEvents), "cdc.>")
	tailOut, err := tail.StdoutPipe()
	if err != nil {
		return err
	}
	tail.Stderr = prefixed("  [sluice tail] ")
	if err := waitStream(ctx, natsURL, "SLUICE_"+strings.ToUpper(db.source)); err != nil {
		return err
	}
	if err := tail.Start(); err != nil {
		return err
	}
	printed := make(chan int, 1)
	go func() {
		n := 0
		sc := bufio.NewScanner(tailOut)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			n++
			fmt.Printf("  event %d: %s\n", n, sc.Text())
		}
		printed <- n
	}()

	for _, w := range db.writes {
		step("transaction: " + strings.Join(w.stmts, "; ") + "   -- " + w.events)
		if err := tx(w.stmts); err != nil {
			return err
		}
		time.Sleep(400 * time.Millisecond)
	}

	done := make(chan error, 1)
	go func() { done <- tail.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("sluice tail: %w", err)
		}
	case <-time.After(30 * time.Second):
		_ = tail.Process.Kill()
		return errors.New("the events did not all arrive within 30s")
	case <-ctx.Done():
		return ctx.Err()
	}
	n := <-printed

	step("stopping sluice with SIGTERM (it drains in-flight publishes and writes its checkpoint)")
	_ = run.Process.Signal(syscall.SIGTERM)
	if err := run.Wait(); err != nil {
		return fmt.Errorf("sluice run did not exit cleanly: %w", err)
	}
	step(fmt.Sprintf("done: %d events arrived in per-key order on subjects cdc.%s.<schema>.<table>.<partition>", n, db.source))
	return nil
}

// waitStream waits until sluice has created its stream, which it does just
// after its NATS server starts listening.
func waitStream(ctx context.Context, url, name string) error {
	nc, err := nats.Connect(url)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if _, err := js.Stream(ctx, name); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stream %s not created: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// prefixed writes each line of a child's output with a prefix.
func prefixed(prefix string) io.Writer {
	r, w := io.Pipe()
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			fmt.Fprintln(os.Stderr, prefix+sc.Text())
		}
	}()
	return w
}

func waitPort(ctx context.Context, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("port %d not listening after %s", port, timeout)
}
