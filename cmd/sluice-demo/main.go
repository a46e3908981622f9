// Command sluice-demo shows sluice end to end on a fresh machine: it starts
// a private PostgreSQL with logical replication, runs `sluice run` on its
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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

func main() {
	bin := flag.String("sluice", "bin/sluice", "path of the sluice binary")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, *bin); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

const schema = `
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
CREATE TABLE orders (
	id bigserial PRIMARY KEY,
	customer_id int REFERENCES customers(id),
	amount numeric(10,2) NOT NULL,
	status text NOT NULL DEFAULT 'new',
	tags text[],
	created_at timestamptz NOT NULL DEFAULT now());`

// writes are the sample transactions, with what each should produce.
var writes = []struct{ sql, events string }{
	{`INSERT INTO customers (name, email) VALUES ('Ada', 'ada@example.com'), ('Grace', 'grace@example.com')`, "2 creates"},
	{`INSERT INTO orders (customer_id, amount, tags) VALUES (1, 19.99, '{gift,express}'), (2, 5.00, NULL)`, "2 creates"},
	{`UPDATE orders SET status = 'paid' WHERE id = 1`, "1 update"},
	{`BEGIN; UPDATE orders SET status = 'shipped' WHERE id = 1; DELETE FROM orders WHERE id = 2; COMMIT`, "1 update, 1 delete"},
}

const wantEvents = 7

func demo(ctx context.Context, bin string) error {
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("sluice binary %s: %w (run `make build` first)", bin, err)
	}
	bin, _ = filepath.Abs(bin)
	dir, err := os.MkdirTemp("", "sluice-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("starting a private PostgreSQL 15 with wal_level=logical")
	pg, err := pgtest.Start(ctx, pgtest.Options{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		return err
	}
	defer pg.Stop()
	if err := pg.CreateDatabase(ctx, "shop"); err != nil {
		return err
	}
	if err := pg.Exec(ctx, "shop", schema); err != nil {
		return err
	}

	natsPort, err := freePort()
	if err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "sluice.yaml")
	cfg := fmt.Sprintf(`source: {name: pg1, kind: postgres, dsn: %q, tables: [public.customers, public.orders]}
nats:   {listen: "127.0.0.1:%d", store_dir: %q}
stream: {subject_prefix: cdc, partitions: 8, replicas: 1}
`, pg.DSN("shop"), natsPort, filepath.Join(dir, "nats"))
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
	if err := waitStream(ctx, natsURL, "SLUICE_PG1"); err != nil {
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

	for _, w := range writes {
		step("psql> " + w.sql + "   -- " + w.events)
		if err := pg.Exec(ctx, "shop", w.sql); err != nil {
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
	step(fmt.Sprintf("done: %d events arrived in per-key order on subjects cdc.pg1.public.<table>.<partition>", n))
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

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
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
