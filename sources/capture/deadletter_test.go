package capture_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/sluice-cdc/sluice/schemas"
	"github.com/sluice-cdc/sluice/sources"
)

// TestContractDeadLetterIDs: a row that breaks a warn contract is
// published and followed by its dead letter under its id with ":dlq"; under
// dlq the dead letter takes the row's place and id.
func TestContractDeadLetterIDs(t *testing.T) {
	for _, tt := range []struct {
		policy string
		want   []string // subject token after cdc.t, and message id
	}{
		{schemas.Warn, []string{"public.orders t:1:0", "public.orders t:2:0", "_dlq t:2:0:dlq"}},
		{schemas.DLQ, []string{"public.orders t:1:0", "_dlq t:2:0"}},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			w := newPipelineWorld(t)
			no := false
			contracts, err := schemas.NewContracts(map[string]schemas.Contract{"public.orders": {Policy: tt.policy,
				Columns: map[string]schemas.ColumnPolicy{"status": {Type: "string", Nullable: &no}}}})
			if err != nil {
				t.Fatal(err)
			}
			src := &scriptSource{table: ordersTable(),
				rows: [][]sources.Value{{sources.Value("1"), sources.Value(`"new"`)}, {sources.Value("2"), sources.Null}}}
			run := w.run(t, src, contracts, time.Minute)
			w.waitLastSeq(t, uint64(len(tt.want)))
			if err := run.stop(); err != nil {
				t.Fatal(err)
			}
			var got []string
			ctx := context.Background()
			for seq := uint64(1); seq <= uint64(len(tt.want)); seq++ {
				m, err := w.stream.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				subject := strings.TrimPrefix(m.Subject, "cdc.t.")
				if i := strings.LastIndexByte(subject, '.'); strings.HasPrefix(subject, "public.") && i > 0 {
					subject = subject[:i] // the partition
				}
				got = append(got, subject+" "+m.Header.Get(jetstream.MsgIDHeader))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("stream holds\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
