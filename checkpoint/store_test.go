package checkpoint_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/checkpoint"
	"github.com/sluice-cdc/sluice/sink/natstest"
)

func TestSaveLoadAndConflict(t *testing.T) {
	srv := natstest.New(t)
	js, err := jetstream.New(srv.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := checkpoint.Open(ctx, js, "ckpt", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := a.Load(ctx, "pg1"); ok || err != nil {
		t.Fatalf("fresh bucket: ok=%v err=%v", ok, err)
	}
	cp := checkpoint.Checkpoint{Source: "pg1", Position: "0/16B3748", StreamSeq: 42, LastEvent: time.Unix(1700000000, 0).UTC(),
		SchemaVersions: map[string]int{"public.orders": 3}}
	if err := a.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
	cp.Position, cp.StreamSeq = "0/16B3800", 50
	if err := a.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}

	// A second sluice for the same source reads, then the first writes again:
	// the second's write must fail rather than move the position backwards.
	b, err := checkpoint.Open(ctx, js, "ckpt", 1)
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Load(ctx, "pg1")
	if err != nil || !ok {
		t.Fatalf("load: ok=%v err=%v", ok, err)
	}
	if got.Position != "0/16B3800" || got.StreamSeq != 50 || got.SchemaVersions["public.orders"] != 3 || !got.LastEvent.Equal(cp.LastEvent) {
		t.Fatalf("loaded %+v", got)
	}
	cp.Position, cp.StreamSeq = "0/16B3900", 60
	if err := a.Save(ctx, cp); err != nil {
		t.Fatal(err)
	}
	got.Position = "0/16B3850"
	if err := b.Save(ctx, got); !errors.Is(err, checkpoint.ErrConflict) {
		t.Fatalf("stale writer: %v, want ErrConflict", err)
	}
}
