package credentials_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources/credentials"
	"github.com/sluice-cdc/sluice/sources/credentials/vaulttest"
)

// VAULT_ADDR and VAULT_TOKEN work as they do for the vault CLI.
func TestEnvironment(t *testing.T) {
	v := vaulttest.New(t)
	ctx := context.Background()
	if err := v.PutKV(ctx, "sluice/pg1", map[string]any{"user": "app", "pass": "pw-1"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_ADDR", v.Addr())
	t.Setenv("VAULT_TOKEN", v.RootToken())
	c, err := credentials.New(ctx, credentials.Config{
		KV: &credentials.KV{Path: "sluice/pg1", UsernameField: "user", PasswordField: "pass"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Login(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if l.User != "app" || l.Password != "pw-1" || l.Expiring != nil {
		t.Fatalf("login %q/%q expiring=%v, want app/pw-1 and no expiry", l.User, l.Password, l.Expiring)
	}

	// A password rotated in KV is picked up once the database refuses the
	// old one, not before.
	if err := v.PutKV(ctx, "sluice/pg1", map[string]any{"user": "app", "pass": "pw-2"}); err != nil {
		t.Fatal(err)
	}
	if l, _ := c.Login(ctx); l.Password != "pw-1" {
		t.Fatalf("login re-read without a refusal: %q", l.Password)
	}
	c.Rejected(l)
	if l, _ := c.Login(ctx); l.Password != "pw-2" {
		t.Fatalf("after a refusal the login is %q, want the rotated pw-2", l.Password)
	}
}

func TestNoToken(t *testing.T) {
	v := vaulttest.New(t)
	t.Setenv("VAULT_TOKEN", "")
	_, err := credentials.New(context.Background(), credentials.Config{Address: v.Addr(), KV: &credentials.KV{Path: "x"}}, nil)
	if !errors.Is(err, credentials.ErrAuth) || !strings.Contains(err.Error(), "VAULT_TOKEN") {
		t.Fatalf("error = %v, want ErrAuth naming VAULT_TOKEN", err)
	}
}

func TestAppRoleWrongSecret(t *testing.T) {
	v := vaulttest.New(t)
	ctx := context.Background()
	roleID, _, err := v.AppRole(ctx, "sluice", []string{"default"}, "1h", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_SECRET_ID", "not-the-secret-id")
	_, err = credentials.New(ctx, credentials.Config{
		Address: v.Addr(),
		Auth:    credentials.Auth{Method: "approle", RoleID: roleID},
		KV:      &credentials.KV{Path: "x"},
	}, nil)
	if !errors.Is(err, credentials.ErrAuth) || !strings.Contains(err.Error(), "check role_id and secret_id") {
		t.Fatalf("error = %v, want ErrAuth naming role_id and secret_id", err)
	}
	if strings.Contains(err.Error(), "not-the-secret-id") {
		t.Error("the error shows the secret id")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		cfg  credentials.Config
		want string
	}{
		{credentials.Config{}, "needs kv"},
		{credentials.Config{KV: &credentials.KV{Path: "a"}, Database: &credentials.Database{Role: "r"}}, "not both"},
		{credentials.Config{KV: &credentials.KV{}}, "kv.path is required"},
		{credentials.Config{Database: &credentials.Database{}}, "database.role is required"},
		{credentials.Config{KV: &credentials.KV{Path: "a"}, Auth: credentials.Auth{Method: "approle"}}, "role_id is required"},
		{credentials.Config{KV: &credentials.KV{Path: "a"}, Auth: credentials.Auth{Method: "kubernetes"}}, "auth.role is required"},
		{credentials.Config{KV: &credentials.KV{Path: "a"}, Auth: credentials.Auth{Method: "ldap"}}, `"ldap": use token, approle or kubernetes`},
		{credentials.Config{KV: &credentials.KV{Path: "a"}}, ""},
	}
	for _, tt := range tests {
		got := strings.Join(tt.cfg.Validate(), "; ")
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("Validate(%+v) = %q, want %q", tt.cfg, got, tt.want)
		}
	}
}
