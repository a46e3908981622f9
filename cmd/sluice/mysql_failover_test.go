package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/consumer"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
)

// failoverEnv is a MariaDB primary, its GTID replica (log_slave_updates),
// and sluice on a DSN that lists both.
func failoverEnv(t *testing.T) (e *env, primary, replica *mysqltest.Server) {
	t.Helper()
	primary = mysqltest.New(t)
	replica = mysqltest.NewReplica(t, primary)
	e = newMySQLEnv(t, primary, "shop.items")
	e.setYAML(primary.DSN("shop"), fmt.Sprintf("root:@tcp(%s,%s)/shop", primary.Addr(), replica.Addr()))
	e.setYAML("kind: mysql,", "kind: mysql, heartbeat: 1s,")
	e.exec(`CREATE TABLE items (id INT PRIMARY KEY, v INT NOT NULL, note TEXT)`)
	e.exec(`INSERT INTO items (id, v) VALUES (1, 0), (2, 0), (3, 0)`)
	return e, primary, replica
}

// writes runs n transactions of inserts, updates (v + 1) and deletes on
// db, continuing the ids in next.
type writes struct {
	rng  *rand.Rand
	next int
	live []int
}

func newWrites() *writes {
	return &writes{rng: rand.New(rand.NewPCG(20, 3)), next: 4, live: []int{1, 2, 3}}
}

func (w *writes) run(t *testing.T, db mysqlCrashDB, n int) {
	t.Helper()
	for range n {
		var stmts []string
		for range 1 + w.rng.IntN(3) {
			switch r := w.rng.IntN(10); {
			case r < 4 || len(w.live) < 5:
				stmts = append(stmts, fmt.Sprintf("INSERT INTO items (id, v) VALUES (%d, 0)", w.next))
				w.live = append(w.live, w.next)
				w.next++
			case r < 8:
				stmts = append(stmts, fmt.Sprintf("UPDATE items SET v = v + 1 WHERE id = %d", w.live[w.rng.IntN(len(w.live))]))
			default:
				i := w.rng.IntN(len(w.live))
				stmts = append(stmts, fmt.Sprintf("DELETE FROM items WHERE id = %d", w.live[i]))
				w.live = append(w.live[:i], w.live[i+1:]...)
			}
		}
		if err := db.tx(stmts); err != nil {
			t.Fatal(err)
		}
	}
}

// waitNoWritable waits until sluice has found no writable host, the
// primary being down and the replica not yet promoted.
func waitNoWritable(t *testing.T, e *env, logs *logBuffer) {
	t.Helper()
	e.waitLog(logs, "is read-only", time.Minute)
}

// TestMySQLFailover: the primary stops, its replica, which logged every
// transaction, is promoted; sluice moves to it and goes on from the
// checkpoint's GTID with no gap and no event twice.
func TestMySQLFailover(t *testing.T) {
	t.Parallel()
	e, primary, replica := failoverEnv(t)
	stop, logs := e.startRun()
	w := newWrites()
	w.run(t, mysqlCrashDB{mysqlConn(t, primary)}, 150)

	ctx := context.Background()
	if err := replica.WaitReplicated(ctx, primary); err != nil {
		t.Fatal(err)
	}
	if err := primary.Halt(); err != nil {
		t.Fatal(err)
	}
	waitNoWritable(t, e, logs)
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	db := mysqlCrashDB{mysqlConn(t, replica)}
	w.run(t, db, 150)

	assertConverged(t, e.natsURL(), e.cfg.Stream.Name, db)
	select {
	case <-e.finished:
		t.Fatalf("sluice exited:\n%s", tailLines(logs.String(), 30))
	default:
	}
	if gaps := readGaps(t, e); len(gaps) != 0 {
		t.Errorf("gaps %+v recorded, want none: the promoted replica has every transaction", gaps)
	}
	if n := strings.Count(logs.String(), "source host changed"); n != 1 {
		t.Errorf("%d host change lines, want 1:\n%s", n, tailLines(logs.String(), 30))
	}
	if !strings.Contains(logs.String(), "to="+replica.Addr()) {
		t.Errorf("the host change does not name the replica %s:\n%s", replica.Addr(), tailLines(logs.String(), 30))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestMySQLFailoverMissingTransactions: the replica stopped replicating
// before transactions sluice read; promoted, it lacks them. That is a gap:
// recorded, and repaired by a backfill, so the view equals the new
// primary's table (rows only the old primary had are deleted).
func TestMySQLFailoverMissingTransactions(t *testing.T) {
	t.Parallel()
	e, primary, replica := failoverEnv(t)
	stop, logs := e.startRun()
	w := newWrites()
	old := mysqlCrashDB{mysqlConn(t, primary)}
	w.run(t, old, 50)

	ctx := context.Background()
	if err := replica.WaitReplicated(ctx, primary); err != nil {
		t.Fatal(err)
	}
	if err := replica.StopReplication(ctx); err != nil {
		t.Fatal(err)
	}
	lost := *w
	lost.live = append([]int(nil), w.live...)
	lost.run(t, old, 30)
	// sluice has read what the replica lacks.
	assertConverged(t, e.natsURL(), e.cfg.Stream.Name, old)
	if err := primary.Halt(); err != nil {
		t.Fatal(err)
	}
	waitNoWritable(t, e, logs)
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	// No write on the new primary before sluice is on it: the checkpoint's
	// GTID is then past the end of its binlog, which MariaDB accepts as a
	// start, so only sluice's own check finds the gap.
	waitGap(t, e, time.Minute)
	db := mysqlCrashDB{mysqlConn(t, replica)}
	w.run(t, db, 50)
	assertViewConverges(t, e.natsURL(), e.cfg.Stream.Name, consumer.TableName{Source: "my1", Schema: "shop", Table: "items"}, db.state)
	gaps := readGaps(t, e)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 1 || gaps[0].To == "" || !strings.Contains(gaps[0].Cause, "lacks") {
		t.Errorf("gaps %+v, want one, caused by the GTIDs the replica lacks, with where streaming resumed", gaps)
	}
}

// TestMySQLSwitchover: the primary is demoted (read_only) but stays up,
// its binlog connection open; the replica is promoted. sluice notices
// within a heartbeat period and moves, with no gap and no event twice.
func TestMySQLSwitchover(t *testing.T) {
	t.Parallel()
	e, primary, replica := failoverEnv(t)
	stop, logs := e.startRun()
	w := newWrites()
	w.run(t, mysqlCrashDB{mysqlConn(t, primary)}, 100)

	ctx := context.Background()
	if err := primary.Exec(ctx, "", "SET GLOBAL read_only = ON"); err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitReplicated(ctx, primary); err != nil {
		t.Fatal(err)
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	db := mysqlCrashDB{mysqlConn(t, replica)}
	w.run(t, db, 100)

	assertConverged(t, e.natsURL(), e.cfg.Stream.Name, db)
	if gaps := readGaps(t, e); len(gaps) != 0 {
		t.Errorf("gaps %+v recorded, want none", gaps)
	}
	if !strings.Contains(logs.String(), "to="+replica.Addr()) {
		t.Errorf("no host change to the replica %s:\n%s", replica.Addr(), tailLines(logs.String(), 30))
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
