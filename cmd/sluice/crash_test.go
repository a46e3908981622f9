package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// buildSluice compiles the binary under test, once per test binary: the
// tests that run it share it (removed by TestMain).
func buildSluice(t testing.TB) string {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-bin-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		bin := filepath.Join(dir, "sluice")
		out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		built.bin = bin
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// built is the binary buildSluice built.
var built struct {
	once     sync.Once
	bin, dir string
	err      error
}

func TestMain(m *testing.M) {
	os.Setenv("SLUICE_TEST_HASH_KEY", testHashKey)
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// proc is a `sluice run` subprocess.
type proc struct {
	cmd  *exec.Cmd
	logf *os.File
}

func startProc(t testing.TB, bin, cfg, logPath string) *proc {
	t.Helper()
	return startProcWith(t, bin, logPath, "run", "--config", cfg)
}

// startProcWith starts the binary with args, its output appended to logPath.
func startProcWith(t testing.TB, bin, logPath string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, bin, logPath, nil, args...)
}

// startProcEnv is startProcWith with env added to the test's environment.
func startProcEnv(t testing.TB, bin, logPath string, env []string, args ...string) *proc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logf: f}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		f.Close()
	})
	return p
}

// crashDB is what the crash test needs of a database.
type crashDB interface {
	// tx runs the statements in one transaction.
	tx(stmts []string) error
	// state returns id → v of every row of items.
	state() (map[int]int, error)
}

// pgCrashDB runs the crash test's transactions on PostgreSQL.
type pgCrashDB struct{ conn *pgx.Conn }

func (d pgCrashDB) tx(stmts []string) error {
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	for _, s := range stmts {
		b.Queue(s)
	}
	b.Queue("COMMIT")
	return d.conn.SendBatch(context.Background(), b).Close()
}

func (d pgCrashDB) state() (map[int]int, error) {
	rows, err := d.conn.Query(context.Background(), "SELECT id, v FROM items")
	if err != nil {
		return nil, err
	}
	state := map[int]int{}
	for rows.Next() {
		var id, v int
		if err := rows.Scan(&id, &v); err != nil {
			return nil, err
		}
		state[id] = v
	}
	return state, rows.Err()
}

// TestCrashRecovery kills sluice with SIGKILL again and again while rows are
// written.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("crash test builds and kills the binary: skipped in -short")
	}
	eachDatabase(t, func(t *testing.T, db database) {
		e, conn := db.start(t, "items")
		e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL, note TEXT)`)
		crashTest(t, e, conn)
	})
}

// crashTest kills sluice with SIGKILL again and again while rows are
// written, then proves the consumer's view equals the table, that no change
// was skipped and none was delivered twice. Each kill lands where the
// stream holds messages after the checkpoint (published, not yet
// checkpointed), so each restart must replay without publishing them again.
func crashTest(t *testing.T, e *env, db crashDB) {
	seed := testSeed(t)
	bin := buildSluice(t)
	// Exactly-once must not lean on the duplicate window: make it tiny.
	e.setYAML("replicas: 1}", "replicas: 1, duplicate_window: 100ms}")
	base := e.serveHTTP()
	logPath := filepath.Join(e.dir, "sluice.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			_ = os.WriteFile(filepath.Join(os.TempDir(), "sluice-crash-"+t.Name()+".log"), b, 0o600)
		}
	})

	p := startProc(t, bin, e.cfgYML, logPath)
	waitReady(t, base, 60*time.Second)

	// The writer: at least 50,000 inserts, and on until the killer is done,
	// in transactions of 1 to 60 rows, with updates (v+1) and deletes of
	// earlier rows mixed in.
	const rows = 50000
	var written atomic.Int64
	stopWriting := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, 1))
		next := 1
		for {
			if next > rows {
				select {
				case <-stopWriting:
					writerDone <- nil
					return
				default:
				}
			}
			n := 1 + rng.IntN(60)
			vals := make([]string, n)
			for i := range n {
				vals[i] = fmt.Sprintf("(%d, 0, 'row %d')", next+i, next+i)
			}
			stmts := []string{"INSERT INTO items VALUES " + strings.Join(vals, ",")}
			next += n
			if next > 100 {
				for range rng.IntN(5) {
					stmts = append(stmts, fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", 1+rng.IntN(next-1)))
				}
				if rng.IntN(10) == 0 {
					stmts = append(stmts, fmt.Sprintf("DELETE FROM items WHERE id = %d", 1+rng.IntN(next-1)))
				}
			}
			if err := db.tx(stmts); err != nil {
				writerDone <- err
				return
			}
			written.Store(int64(next - 1))
			// Workload, not a wait: transactions a few milliseconds apart.
			time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
		}
	}()

	// The killer: SIGKILL once the stream has grown by a random number of
	// messages since the start and holds messages after the checkpoint, until
	// 50,000 rows are written, at least three times.
	rng := rand.New(rand.NewPCG(seed, 2))
	kills, replays := 0, 0
	for written.Load() < rows || kills < 3 {
		progress := e.progress()
		waitUncheckpointed(t, progress, uint64(50+rng.IntN(2000)), writerDone)
		progress.close()
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
		kills++
		// What the restart finds: messages stored after the checkpoint,
		// which it must not publish again.
		if cp, _, last := readStopped(t, e); last > cp.StreamSeq {
			replays++
		} else {
			t.Logf("kill %d: the checkpoint (stream_seq %d) had caught up with the stream", kills, cp.StreamSeq)
		}
		p = startProc(t, bin, e.cfgYML, logPath)
		waitReady(t, base, 60*time.Second)
	}
	close(stopWriting)
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	t.Logf("killed sluice %d times while writing %d rows; %d kills left messages after the checkpoint", kills, written.Load(), replays)
	if replays == 0 {
		t.Fatal("no kill left messages after the checkpoint: the replay path was not exercised")
	}

	assertConverged(t, e.natsURL(), e.cfg.Stream.Name, db)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("sluice did not exit 0 on SIGTERM: %v\n%s", err, tailLines(string(b), 30))
	}
	// Every restart that found messages after its checkpoint said it skips
	// them.
	b, _ := os.ReadFile(logPath)
	if n := strings.Count(string(b), "messages already stored after it are not published again"); n < replays {
		t.Errorf("%d restarts skipped messages stored after their checkpoint, want %d", n, replays)
	}
}

// waitUncheckpointed waits until sluice's stream has grown by grow
// messages since p first reads it and holds messages after the checkpoint,
// failing the test if the writer stops first.
//
// A checkpoint exists from the first start on: the engine writes the
// source's capture point before it streams (TestFirstStartCheckpointsStart
// covers a kill before the first commit is checkpointed).
func waitUncheckpointed(t *testing.T, p *progress, grow uint64, writerDone <-chan error) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var from uint64
	started := false
	for {
		cp, ok, last, err := p.read(context.Background())
		if err == nil && !started {
			from, started = last, true
		}
		if err == nil && ok && last >= from+grow && last > cp.StreamSeq {
			return
		}
		select {
		case err := <-writerDone:
			t.Fatalf("the writer stopped while sluice was running: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream did not grow by %d messages past the checkpoint within 2m (last %d, checkpoint %d, error %v)", grow, last, cp.StreamSeq, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertConverged waits until the consumer's view of the stream equals the
// table, then proves no change was skipped and none was delivered twice:
// each transaction's message indexes run 0..n-1, and each key's v grows by
// exactly 1 per update.
func assertConverged(t *testing.T, url, stream string, db crashDB) {
	t.Helper()
	// Converge: the consumer's view must reach the table's state.
	want, err := db.state()
	if err != nil {
		t.Fatal(err)
	}
	var view map[int]int
	var events []crashEvent
	deadline := time.Now().Add(3 * time.Minute)
	for {
		events = readAllEvents(t, url, stream)
		view = materialize(events)
		if equalState(view, want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}

	if !equalState(view, want) {
		missing, extra := 0, 0
		for id, v := range want {
			if got, ok := view[id]; !ok || got != v {
				missing++
			}
		}
		for id := range view {
			if _, ok := want[id]; !ok {
				extra++
			}
		}
		shown := 0
		for id, v := range want {
			if got, ok := view[id]; (!ok || got != v) && shown < 5 {
				shown++
				var evs []string
				for _, ev := range events {
					if ev.key == id {
						evs = append(evs, fmt.Sprintf("%s %s v=%d", ev.Op, ev.id, ev.v))
					}
				}
				t.Logf("key %d: table v=%d, view %d (present %v); its events: %v", id, v, got, ok, evs)
			}
		}
		t.Fatalf("consumer view differs from the table: %d rows missing or stale, %d extra (table %d rows, view %d)", missing, extra, len(want), len(view))
	}
	// No message delivered twice, no position skipped: each transaction's
	// indexes are 0..n-1 without a hole, and each key's v only ever grows by 1.
	seen := map[string]bool{}
	indexes := map[string][]int{}
	lastV := map[int]int{}
	for _, ev := range events {
		if seen[ev.id] {
			t.Fatalf("message id %s delivered twice", ev.id)
		}
		seen[ev.id] = true
		i := strings.LastIndexByte(ev.id, ':')
		idx, _ := strconv.Atoi(ev.id[i+1:])
		indexes[ev.id[:i]] = append(indexes[ev.id[:i]], idx)
		switch ev.Op {
		case "c":
			lastV[ev.key] = ev.v
		case "u":
			if prev := lastV[ev.key]; ev.v != prev+1 {
				t.Fatalf("key %d went from v=%d to v=%d: an update was skipped or reordered", ev.key, prev, ev.v)
			}
			lastV[ev.key] = ev.v
		}
	}
	for pos, idx := range indexes {
		for i, x := range idx {
			if x != i {
				t.Fatalf("transaction %s: message indexes %v have a hole or are out of order", pos, idx)
			}
		}
	}
	t.Logf("%d events, %d transactions, %d rows in the table", len(events), len(indexes), len(want))
}

// crashEvent is what the crash test needs of an event.
type crashEvent struct {
	Op  string
	id  string // Nats-Msg-Id
	key int
	v   int
}

// readAllEvents reads the stream's row events. The table's schema-change
// events (its first shape's) are checked, not returned: announced once
// each, however often sluice was killed, before the rows of their version.
func readAllEvents(t *testing.T, url, stream string) []crashEvent {
	t.Helper()
	n := int(streamCount(t, url, stream))
	var out []crashEvent
	all := readEvents(t, url, stream, n, 2*time.Minute)
	assertAnnounced(t, all)
	for _, e := range all {
		if !isRow(e) {
			continue
		}
		ce := crashEvent{Op: e.Op, id: e.msgID}
		if err := json.Unmarshal(e.Key["id"], &ce.key); err != nil {
			t.Fatalf("event key: %v: %s", err, e.raw)
		}
		if e.After != nil {
			if err := json.Unmarshal(e.After["v"], &ce.v); err != nil {
				t.Fatalf("event v: %v: %s", err, e.raw)
			}
		}
		out = append(out, ce)
	}
	return out
}

// materialize applies events the way a consumer keeping a copy would.
func materialize(events []crashEvent) map[int]int {
	view := map[int]int{}
	for _, ev := range events {
		switch ev.Op {
		case "c", "u", "r":
			view[ev.key] = ev.v
		case "d":
			delete(view, ev.key)
		}
	}
	return view
}

func equalState(a, b map[int]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
