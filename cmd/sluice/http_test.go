package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue reads one sample of a scrape; -1 when it is absent.
func metricValue(scrape, name string, labels ...string) float64 {
	for _, line := range strings.Split(scrape, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			return v
		}
	}
	return -1
}

// waitHTTP polls url until check passes.
func waitHTTP(t testing.TB, url string, timeout time.Duration, what string, check func(code int, body string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := httpGet(t, url)
		if check(code, body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s answered %d within %s:\n%s", what, url, code, timeout, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestHTTPMetricsAndReadiness scrapes /metrics during a real stream: the
// counters move and the lag falls to zero when idle; /readyz turns unready
// while PostgreSQL is stopped and ready again after it returns.
func TestHTTPMetricsAndReadiness(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	e.setYAML("replicas: 1}", "replicas: 1}\nhttp: {listen: \""+addr+"\"}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY, v int)`)
	stop, _ := e.startRun()
	base := "http://" + addr
	if code, body := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	waitHTTP(t, base+"/readyz", 30*time.Second, "ready after start", func(code int, _ string) bool { return code == 200 })

	for i := range 20 {
		e.exec(fmt.Sprintf("INSERT INTO items VALUES (%d, 0)", i))
	}
	e.exec(`UPDATE items SET v = 1 WHERE id < 5`)
	readRows(t, e.natsURL(), e.cfg.Stream.Name, 25, time.Minute)
	scrape := waitHTTP(t, base+"/metrics", 30*time.Second, "idle lag 0", func(code int, body string) bool {
		// Events are counted when published, transactions when stored:
		// wait for both.
		return code == 200 && metricValue(body, "sluice_source_lag_seconds") == 0 &&
			metricValue(body, "sluice_events_total", `op="c"`, `table="public.items"`) == 20 &&
			metricValue(body, "sluice_end_to_end_seconds_count") >= 21
	})
	for _, m := range []struct {
		name   string
		labels []string
		want   func(float64) bool
	}{
		{"sluice_events_total", []string{`op="u"`, `table="public.items"`}, func(v float64) bool { return v == 5 }},
		{"sluice_end_to_end_seconds_count", nil, func(v float64) bool { return v >= 21 }},
		{"sluice_checkpoint_age_seconds", nil, func(v float64) bool { return v >= 0 && v < 30 }},
		{"sluice_last_event_timestamp_seconds", nil, func(v float64) bool { return time.Since(time.Unix(int64(v), 0)) < time.Minute }},
		{"sluice_source_reconnects_total", nil, func(v float64) bool { return v == 0 }},
		{"sluice_backfill_running", nil, func(v float64) bool { return v == -1 }}, // no backfill yet
		{"go_goroutines", nil, func(v float64) bool { return v > 0 }},
	} {
		if v := metricValue(scrape, m.name, m.labels...); !m.want(v) {
			t.Errorf("%s%v = %v", m.name, m.labels, v)
		}
	}
	sum := 0.0
	for p := range 4 {
		if v := metricValue(scrape, "sluice_partition_events_total", fmt.Sprintf(`partition="%d"`, p)); v > 0 {
			sum += v
		}
	}
	if sum != 25 {
		t.Errorf("partition counts add up to %v, want 25", sum)
	}
	if !regexp.MustCompile(`(?m)^# TYPE sluice_end_to_end_seconds histogram$`).MatchString(scrape) {
		t.Error("no end-to-end latency histogram")
	}

	// The database goes away: not ready; it returns: ready again.
	if err := pg.Halt(); err != nil {
		t.Fatal(err)
	}
	body := waitHTTP(t, base+"/readyz", 30*time.Second, "unready while PostgreSQL is down", func(code int, _ string) bool { return code == 503 })
	if !strings.Contains(body, "log is not open") {
		t.Errorf("/readyz while PostgreSQL is down: %s", body)
	}
	if err := pg.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, base+"/readyz", 60*time.Second, "ready after PostgreSQL returned", func(code int, _ string) bool { return code == 200 })
	scrape = waitHTTP(t, base+"/metrics", 10*time.Second, "scrape", func(code int, _ string) bool { return code == 200 })
	if v := metricValue(scrape, "sluice_source_reconnects_total"); v < 1 {
		t.Errorf("sluice_source_reconnects_total = %v after PostgreSQL restarted", v)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// An idle captured table must not make the slot hold the WAL that other
// tables write: heartbeats move the slot along.
func TestPostgresHeartbeat(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.items")
	e.setYAML("kind: postgres,", "kind: postgres, heartbeat: 1s,")
	addr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	e.setYAML("replicas: 1}", "replicas: 1}\nhttp: {listen: \""+addr+"\"}")
	e.exec(`CREATE TABLE items (id int PRIMARY KEY)`)
	e.exec(`CREATE TABLE busy (id serial PRIMARY KEY, pad text)`)
	stop, _ := e.startRun()
	conn := pgConn(t, pg)
	for range 20 {
		e.exec(`INSERT INTO busy (pad) SELECT repeat('x', 500) FROM generate_series(1, 1000)`)
	}
	var target string
	if err := conn.QueryRow(context.Background(), `SELECT pg_current_wal_lsn()::text`).Scan(&target); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		var past bool
		err := conn.QueryRow(context.Background(),
			`SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name = 'sluice_pg1'`, target).Scan(&past)
		if err != nil {
			t.Fatal(err)
		}
		if past {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slot did not move past %s while only an uncaptured table changed", target)
		}
		time.Sleep(200 * time.Millisecond)
	}
	scrape := waitHTTP(t, "http://"+addr+"/metrics", 10*time.Second, "scrape", func(code int, _ string) bool { return code == 200 })
	if v := metricValue(scrape, "sluice_source_lag_bytes"); v < 0 {
		t.Errorf("no sluice_source_lag_bytes in the scrape")
	}
	if n := streamCount(t, e.natsURL(), e.cfg.Stream.Name); n != 0 {
		t.Errorf("heartbeats published %d messages; they must publish none", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
