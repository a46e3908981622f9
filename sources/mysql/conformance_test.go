package mysql_test

import (
	"context"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/mysql"
	"github.com/sluice-cdc/sluice/sources/mysql/mysqltest"
	"github.com/sluice-cdc/sluice/sources/sourcetest"
)

// The MySQL driver keeps the contract every driver keeps, on MariaDB.
func TestConformance(t *testing.T) {
	srv := mysqltest.New(t)
	ctx := context.Background()
	if err := srv.CreateDatabase(ctx, "conform"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Exec(ctx, "conform", "CREATE TABLE items (id INT PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	sourcetest.Run(t, sourcetest.Harness{
		Driver: mysql.Driver{},
		Spec:   sources.Spec{Config: sources.Config{Name: "conform", Kind: "mysql", DSN: srv.DSN("conform"), Tables: []string{"conform.items"}}},
		Table:  "conform.items",
		Insert: func(ctx context.Context, id int, v string) error {
			return srv.Exec(ctx, "conform", "INSERT INTO items VALUES (?, ?)", id, v)
		},
	})
}
