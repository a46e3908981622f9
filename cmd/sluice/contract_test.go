package main

import (
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
)

const contractYAML = `contracts:
  %[1]s.orders:
    policy: dlq
    columns:
      status: {type: string, required: true, nullable: false, enum: [new, paid]}
      amount: {type: number, min: 0}`

func contractEnv(t *testing.T, e *env, schema string) {
	t.Helper()
	e.setYAML("replicas: 1}", "replicas: 1}\n"+strings.ReplaceAll(contractYAML, "%[1]s", schema))
	e.exec(`CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(10), amount DECIMAL(10,2))`)
}

// TestContractPostgres: rows that break their contract go to the
// dead-letter subject (dlq) instead of their partition; under halt sluice
// stops before the row and its checkpoint stays before it, so the row
// comes through once the policy lets it (warn: published and copied to the
// dead-letter subject); a dropped required column is reported before the
// new shape's first event.
func TestContractPostgres(t *testing.T) {
	t.Parallel()
	pg := pgtest.New(t)
	e := newEnv(t, pg, "public.orders")
	contractEnv(t, e, "public")
	stop, _ := e.startRun()
	e.exec(`INSERT INTO orders VALUES (1, 'new', 10)`)
	e.exec(`INSERT INTO orders VALUES (2, 'lost', 5)`)
	e.exec(`INSERT INTO orders VALUES (3, 'paid', -1)`)
	e.exec(`INSERT INTO orders VALUES (4, 'paid', NULL)`)
	e.exec(`INSERT INTO orders VALUES (5, NULL, 1)`)
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 5, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want := []struct{ subject, has string }{
		{"cdc.pg1.public.orders.", `"id":1`},
		{"cdc.pg1._dlq", `column status is \"lost\", not one of [new paid]`},
		{"cdc.pg1._dlq", `column amount is \"-1.00\", below the minimum 0`},
		{"cdc.pg1.public.orders.", `"id":4`},
		{"cdc.pg1._dlq", `column status is null, the contract says not null`},
	}
	for i, w := range want {
		if !strings.HasPrefix(events[i].subject, w.subject) || !strings.Contains(events[i].raw, w.has) {
			t.Errorf("message %d on %s: %s; want on %s* with %s", i, events[i].subject, events[i].raw, w.subject, w.has)
		}
	}

	// halt: sluice stops at the breaking row, the checkpoint before it.
	e.setYAML("policy: dlq", "policy: halt")
	stop, logs := e.startRun()
	e.exec(`INSERT INTO orders VALUES (6, 'gone', 1)`)
	select {
	case <-e.finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("sluice did not stop at a row breaking a halt contract:\n%s", logs)
	}
	err := stop()
	mentions(t, err, "data contract broken", "public.orders", `"gone"`, "contracts.public.orders.policy is halt")

	// warn: the same row is replayed, published, and copied to the DLQ;
	// then a required column dropped is reported before the new shape.
	e.setYAML("policy: halt", "policy: warn")
	stop, _ = e.startRun()
	e.exec(`ALTER TABLE orders DROP COLUMN status`)
	e.exec(`INSERT INTO orders VALUES (7, 1)`)
	events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 5+5, time.Minute)[5:]
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	want = []struct{ subject, has string }{
		{"cdc.pg1.public.orders.", `"id":6`},
		{"cdc.pg1._dlq", `"policy":"warn"`},
		{"cdc.pg1.public.orders._schema", `"op":"schema"`},
		{"cdc.pg1._dlq", `required column status was dropped`},
		{"cdc.pg1.public.orders.", `"id":7`},
	}
	for i, w := range want {
		if !strings.HasPrefix(events[i].subject, w.subject) || !strings.Contains(events[i].raw, w.has) {
			t.Errorf("message %d on %s: %s; want on %s* with %s", i, events[i].subject, events[i].raw, w.subject, w.has)
		}
	}
}

func TestContractMySQL(t *testing.T) {
	t.Parallel()
	my := mysqltest.New(t)
	e := newMySQLEnv(t, my, "shop.orders")
	contractEnv(t, e, "shop")
	stop, _ := e.startRun()
	e.exec(`INSERT INTO orders VALUES (1, 'new', 10)`)
	e.exec(`INSERT INTO orders VALUES (2, 'lost', 5)`)
	events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 2, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(events[0].subject, "cdc.my1.shop.orders.") || events[1].subject != "cdc.my1._dlq" ||
		!strings.Contains(events[1].raw, `not one of [new paid]`) || !strings.Contains(events[1].raw, `"subject":"cdc.my1.shop.orders.`) {
		t.Fatalf("messages %s: %s; %s: %s", events[0].subject, events[0].raw, events[1].subject, events[1].raw)
	}
	// halt stops at the row, and the saved position is before it: under
	// warn the row comes through.
	e.setYAML("policy: dlq", "policy: halt")
	stop, logs := e.startRun()
	e.exec(`INSERT INTO orders VALUES (3, 'gone', 1)`)
	select {
	case <-e.finished:
	case <-time.After(30 * time.Second):
		t.Fatalf("sluice did not stop at a row breaking a halt contract:\n%s", logs)
	}
	mentions(t, stop(), "data contract broken", "shop.orders", `"gone"`)
	e.setYAML("policy: halt", "policy: warn")
	stop, _ = e.startRun()
	events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 4, time.Minute)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(events[2].raw, `"id":3`) || events[3].subject != "cdc.my1._dlq" || !strings.Contains(events[3].raw, `"policy":"warn"`) {
		t.Fatalf("after halt, under warn: %s / %s", events[2].raw, events[3].raw)
	}
}
