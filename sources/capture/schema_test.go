package capture_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sink/natstest"
	"github.com/sluice-cdc/sluice/sources"
)

// TestSchemaEventOfUnfitTableName: a table listed by name whose name
// cannot be a subject token fails with the clear error of its rows also
// when its shape changed, and nothing is published: its schema-change
// event would have gone out on cdc.t.public.we.ird._schema, tokens
// shifted, ahead of the refused rows.
func TestSchemaEventOfUnfitTableName(t *testing.T) {
	w := newPipelineWorld(t)
	ctx := context.Background()
	v1 := &sources.Table{Schema: "public", Name: "we.ird", Columns: []string{"id"}, Types: []string{"int4"}, Key: []int{0}}
	if _, ch, err := schemas.NewRegistry("t", w.store).Observe(ctx, v1); err != nil || ch != nil {
		t.Fatalf("register the first shape: %v %v", ch, err)
	}
	// A column more than the registered shape: a shape change.
	v2 := &sources.Table{Schema: "public", Name: "we.ird", Columns: []string{"id", "status"},
		Types: []string{"int4", "text"}, Key: []int{0}}
	src := &scriptSource{table: v2, rows: [][]sources.Value{{sources.Value("1"), sources.Value(`"new"`)}}}

	var err error
	select {
	case err = <-w.run(t, src, nil, time.Minute).done:
	case <-time.After(30 * time.Second):
		t.Fatal("the pipeline still runs 30s after a change of table public.we.ird")
	}
	if err == nil || !strings.Contains(err.Error(), "table public.we.ird: its name cannot be a NATS subject token") {
		t.Fatalf("run ended with %v, want the subject token error", err)
	}
	if ids := natstest.MsgIDs(t, w.stream); len(ids) != 0 {
		t.Fatalf("the stream holds %v, want nothing of a refused table", ids)
	}
}
