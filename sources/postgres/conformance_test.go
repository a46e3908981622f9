package postgres_test

import (
	"context"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/postgres"
	"github.com/sluice-cdc/sluice/sources/postgres/pgtest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// The PostgreSQL driver keeps the contract every driver keeps.
func TestConformance(t *testing.T) {
	srv := pgtest.New(t)
	ctx := context.Background()
	if err := srv.CreateDatabase(ctx, "conform"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "conform", "CREATE TABLE items (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	sourcetest.Run(t, sourcetest.Harness{
		Driver: postgres.Driver{},
		Spec:   sources.Spec{Config: sources.Config{Name: "conform", Kind: "postgres", DSN: srv.DSN("conform"), Tables: []string{"public.items"}}},
		Table:  "public.items",
		Insert: func(ctx context.Context, id int, v string) error {
			return srv.Exec(ctx, "conform", "INSERT INTO items VALUES ($1, $2)", id, v)
		},
	})
}
