package main

import (
	"strings"
	"testing"
	"time"
)

const contractYAML = `contracts:
  %[1]s.orders:
    policy: dlq
    columns:
      status: {type: string, required: true, nullable: false, enum: [new, paid]}
      amount: {type: number, min: 0}`

// TestContract: rows that break their contract go to the dead-letter
// subject (dlq) instead of their partition, and the table's first shape,
// which keeps the contract, is announced with no dead letter; under halt sluice stops before
// the row and its checkpoint stays before it, so the row comes through
// once the policy lets it (warn: published and copied to the dead-letter
// subject); a dropped required column is reported before the new shape's
// first event.
func TestContract(t *testing.T) {
	t.Parallel()
	eachDatabase(t, func(t *testing.T, db database) {
		e, _ := db.start(t, "orders")
		e.setYAML("replicas: 1}", "replicas: 1}\n"+strings.ReplaceAll(contractYAML, "%[1]s", db.schema))
		e.exec(`CREATE TABLE orders (id INT PRIMARY KEY, status VARCHAR(10), amount DECIMAL(10,2))`)
		stop, _ := e.startRun()
		e.exec(`INSERT INTO orders VALUES (1, 'new', 10)`)
		e.exec(`INSERT INTO orders VALUES (2, 'lost', 5)`)
		e.exec(`INSERT INTO orders VALUES (3, 'paid', -1)`)
		e.exec(`INSERT INTO orders VALUES (4, 'paid', NULL)`)
		e.exec(`INSERT INTO orders VALUES (5, NULL, 1)`)
		events := readEvents(t, e.natsURL(), e.cfg.Stream.Name, 1+5, time.Minute)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		orders, dlq := db.subject("orders")+".", "cdc."+db.source+"._dlq"
		assertFirstShape(t, events[0], orders+"_schema", "id,status,amount", "id")
		want := []struct{ subject, has string }{
			{orders + "_schema", `"op":"schema"`},
			{orders, `"id":1`},
			{dlq, `column status is \"lost\", not one of [new paid]`},
			{dlq, `column amount is \"-1.00\", below the minimum 0`},
			{orders, `"id":4`},
			{dlq, `column status is null, the contract says not null`},
		}
		for i, w := range want {
			if !strings.HasPrefix(events[i].subject, w.subject) || !strings.Contains(events[i].raw, w.has) {
				t.Errorf("message %d on %s: %s; want on %s* with %s", i, events[i].subject, events[i].raw, w.subject, w.has)
			}
		}
		if !strings.Contains(events[2].raw, `"subject":"`+orders) {
			t.Errorf("the dead letter does not name the subject it was kept from: %s", events[2].raw)
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
		mentions(t, err, "data contract broken", db.schema+".orders", `"gone"`, "contracts."+db.schema+".orders.policy is halt")

		// warn: the same row is replayed, published, and copied to the DLQ;
		// then a required column dropped is reported before the new shape.
		e.setYAML("policy: halt", "policy: warn")
		stop, _ = e.startRun()
		e.exec(`ALTER TABLE orders DROP COLUMN status`)
		e.exec(`INSERT INTO orders VALUES (7, 1)`)
		events = readEvents(t, e.natsURL(), e.cfg.Stream.Name, 6+5, time.Minute)[6:]
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		want = []struct{ subject, has string }{
			{orders, `"id":6`},
			{dlq, `"policy":"warn"`},
			{orders + "_schema", `"op":"schema"`},
			{dlq, `required column status was dropped`},
			{orders, `"id":7`},
		}
		for i, w := range want {
			if !strings.HasPrefix(events[i].subject, w.subject) || !strings.Contains(events[i].raw, w.has) {
				t.Errorf("message %d on %s: %s; want on %s* with %s", i, events[i].subject, events[i].raw, w.subject, w.has)
			}
		}
	})
}
