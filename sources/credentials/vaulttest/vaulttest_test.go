package vaulttest_test

import (
	"context"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/sluice-cdc/sluice/sources/credentials/vaulttest"
)

func TestServer(t *testing.T) {
	ctx := context.Background()
	s := vaulttest.New(t)
	if err := s.PutKV(ctx, "a/b", map[string]any{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Policy(ctx, "read-a", `path "secret/data/a/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	token, err := s.Token(ctx, []string{"read-a"}, "1h")
	if err != nil {
		t.Fatal(err)
	}
	cfg := vault.DefaultConfig()
	cfg.Address = s.Addr()
	c, err := vault.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	sec, err := c.KVv2("secret").Get(ctx, "a/b")
	if err != nil {
		t.Fatal(err)
	}
	if sec.Data["k"] != "v" {
		t.Fatalf("read %v, want k=v", sec.Data)
	}
	if _, err := c.KVv2("secret").Get(ctx, "other"); err == nil {
		t.Fatal("a token with only read-a read secret/other")
	}

	roleID, secretID, err := s.AppRole(ctx, "r", []string{"read-a"}, "1h", "")
	if err != nil {
		t.Fatal(err)
	}
	if roleID == "" || secretID == "" {
		t.Fatalf("AppRole gave role_id %q, secret_id %q", roleID, secretID)
	}

	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVv2("secret").Get(ctx, "a/b"); err == nil {
		t.Fatal("a sealed Vault answered a read")
	}
	if err := s.Unseal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.KVv2("secret").Get(ctx, "a/b"); err != nil {
		t.Fatalf("read after unseal: %v", err)
	}
}
