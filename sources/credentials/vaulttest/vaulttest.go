// Package vaulttest runs a private, real Vault dev server for integration
// tests: in memory, on a loopback free port, with KV v2 at secret/ and the
// database secrets engine's built-in plugins.
//
// Debian has no Vault package, so the binary is built once per machine from
// Vault's Go module by `make vault` (see vaultbin/) and found through
// SLUICE_VAULT_BIN or the cache path that target writes.
package vaulttest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/sluice-cdc/sluice/sources/proctest"
)

// Version is the Vault release vaultbin builds.
const Version = "1.13.0"

const (
	rootToken    = "sluice-test-root"
	readyTimeout = 60 * time.Second
	stopTimeout  = 10 * time.Second
	portRetries  = 3
)

// Binary returns the path of the Vault binary tests run, or an error that
// says how to get one.
func Binary() (string, error) {
	if bin := os.Getenv("SLUICE_VAULT_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			return "", fmt.Errorf("SLUICE_VAULT_BIN=%s: %w", bin, err)
		}
		return bin, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(home, ".cache", "sluice", "vault-"+Version, "vault")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no Vault binary at %s: run `make vault` once (it builds Vault %s from its Go module) or set SLUICE_VAULT_BIN", bin, Version)
	}
	return bin, nil
}

// Server is a running Vault dev server owned by this process.
type Server struct {
	addr      string
	unsealKey string
	client    *vault.Client
	dir       string
	log       *lockedBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

var unsealRe = regexp.MustCompile(`Unseal Key: (\S+)`)

// Start runs `vault server -dev` and returns once it is unsealed and
// answering requests.
func Start(ctx context.Context) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		s, err := launch(ctx, bin)
		if err == nil {
			return s, nil
		}
		// Another process may take the free port before Vault binds it.
		if attempt < portRetries && strings.Contains(err.Error(), "address already in use") {
			continue
		}
		return nil, err
	}
}

func launch(ctx context.Context, bin string) (*Server, error) {
	port, err := proctest.FreePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vaulttest-")
	if err != nil {
		return nil, err
	}
	s := &Server{
		addr: fmt.Sprintf("http://127.0.0.1:%d", port),
		dir:  dir,
		log:  &lockedBuffer{},
		done: make(chan struct{}),
	}
	cmd := exec.Command(bin, "server", "-dev",
		"-dev-root-token-id="+rootToken,
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
		// Never touch the user's ~/.vault-token.
		"-dev-no-store-token")
	cmd.Dir = dir
	// A dependency's embedded CA certificate has a negative serial number,
	// which newer Go refuses to parse without this.
	cmd.Env = append(os.Environ(), "GODEBUG=x509negativeserial=1", "HOME="+dir, "VAULT_ADDR=", "VAULT_TOKEN=")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("vaulttest: start %s: %w", bin, err)
	}
	s.cmd = cmd
	keyc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			s.log.WriteLine(line)
			if m := unsealRe.FindStringSubmatch(line); m != nil && !sent {
				keyc <- m[1]
				sent = true
			}
		}
	}()
	go func() {
		s.err = cmd.Wait()
		pw.Close()
		close(s.done)
	}()

	cfg := vault.DefaultConfig()
	cfg.Address = s.addr
	if s.client, err = vault.NewClient(cfg); err != nil {
		s.Stop()
		return nil, err
	}
	s.client.SetToken(rootToken)
	if err := s.waitReady(ctx, keyc); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) waitReady(ctx context.Context, keyc <-chan string) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	for {
		if s.unsealKey == "" {
			select {
			case s.unsealKey = <-keyc:
			default:
			}
		}
		h, err := s.client.Sys().HealthWithContext(ctx)
		if err == nil && h.Initialized && !h.Sealed && s.unsealKey != "" {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("vaulttest: vault exited before it was ready (%v); its output:\n%s", s.err, s.log.Last(20))
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("vaulttest: vault not ready after %v (last error: %v); its output:\n%s", readyTimeout, err, s.log.Last(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// New is Start for tests: it fails the test on error (a missing binary
// too), and stops the server when the test ends. Under -short it skips the
// test, since it starts a real server.
func New(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Vault: not in -short")
	}
	s, err := Start(context.Background())
	if err != nil {
		t.Fatalf("vaulttest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("vaulttest: stop: %v", err)
		}
	})
	return s
}

// Addr is the server's http:// address, as VAULT_ADDR wants it.
func (s *Server) Addr() string { return s.addr }

// RootToken is the dev server's root token.
func (s *Server) RootToken() string { return rootToken }

// Client is an API client holding the root token.
func (s *Server) Client() *vault.Client { return s.client }

// Output is what the server printed so far, for failure messages.
func (s *Server) Output() string { return s.log.String() }

// Stop kills the server (a dev server keeps nothing worth a clean shutdown)
// and removes its dir.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return nil
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	var err error
	select {
	case <-s.done:
	case <-time.After(stopTimeout):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
		err = fmt.Errorf("vault did not stop within %v; killed", stopTimeout)
	}
	s.cmd = nil
	os.RemoveAll(s.dir)
	return err
}

// Seal seals the server: every request but health and unseal fails until
// Unseal.
func (s *Server) Seal(ctx context.Context) error {
	return s.client.Sys().SealWithContext(ctx)
}

// Unseal unseals a sealed server with the dev server's single key.
func (s *Server) Unseal(ctx context.Context) error {
	st, err := s.client.Sys().UnsealWithContext(ctx, s.unsealKey)
	if err != nil {
		return err
	}
	if st.Sealed {
		return errors.New("vaulttest: still sealed after the unseal key")
	}
	return nil
}

// PutKV writes a KV v2 secret at secret/<path>.
func (s *Server) PutKV(ctx context.Context, path string, data map[string]any) error {
	_, err := s.client.KVv2("secret").Put(ctx, path, data)
	return err
}

// Policy writes an ACL policy.
func (s *Server) Policy(ctx context.Context, name, hcl string) error {
	return s.client.Sys().PutPolicyWithContext(ctx, name, hcl)
}

// Token creates a renewable token holding exactly policies: without Vault's
// "default" policy, so a test proves those policies are enough.
func (s *Server) Token(ctx context.Context, policies []string, ttl string) (string, error) {
	sec, err := s.client.Auth().Token().CreateWithContext(ctx, &vault.TokenCreateRequest{
		Policies:        policies,
		TTL:             ttl,
		Renewable:       boolPtr(true),
		NoDefaultPolicy: true,
	})
	if err != nil {
		return "", err
	}
	return sec.Auth.ClientToken, nil
}

// AppRole enables AppRole auth (once) and defines role, whose tokens hold
// policies and live tokenTTL, renewable up to tokenMaxTTL ("" = Vault's
// defaults). It returns the role's ID and a fresh secret ID.
func (s *Server) AppRole(ctx context.Context, role string, policies []string, tokenTTL, tokenMaxTTL string) (roleID, secretID string, err error) {
	if err := s.enableAuth(ctx, "approle"); err != nil {
		return "", "", err
	}
	l := s.client.Logical()
	if _, err := l.WriteWithContext(ctx, "auth/approle/role/"+role, map[string]any{
		"token_policies":          strings.Join(policies, ","),
		"token_no_default_policy": true,
		"token_ttl":               tokenTTL,
		"token_max_ttl":           tokenMaxTTL,
	}); err != nil {
		return "", "", err
	}
	sec, err := l.ReadWithContext(ctx, "auth/approle/role/"+role+"/role-id")
	if err != nil {
		return "", "", err
	}
	roleID, _ = sec.Data["role_id"].(string)
	sec, err = l.WriteWithContext(ctx, "auth/approle/role/"+role+"/secret-id", nil)
	if err != nil {
		return "", "", err
	}
	secretID, _ = sec.Data["secret_id"].(string)
	return roleID, secretID, nil
}

// DatabaseRole enables the database secrets engine at database/ (once),
// configures connection name with plugin, and defines role on it.
// Vault connects to the database as adminUser/adminPassword with
// connURL's {{username}} and {{password}} templates.
func (s *Server) DatabaseRole(ctx context.Context, name, plugin, connURL, adminUser, adminPassword, role string,
	creation, revocation []string, ttl, maxTTL string) error {
	if err := s.enableSecrets(ctx, "database", "database"); err != nil {
		return err
	}
	l := s.client.Logical()
	if _, err := l.WriteWithContext(ctx, "database/config/"+name, map[string]any{
		"plugin_name":       plugin,
		"connection_url":    connURL,
		"username":          adminUser,
		"password":          adminPassword,
		"allowed_roles":     role,
		"verify_connection": true,
	}); err != nil {
		return fmt.Errorf("configure database %s: %w", name, err)
	}
	if _, err := l.WriteWithContext(ctx, "database/roles/"+role, map[string]any{
		"db_name":               name,
		"creation_statements":   creation,
		"revocation_statements": revocation,
		"default_ttl":           ttl,
		"max_ttl":               maxTTL,
	}); err != nil {
		return fmt.Errorf("define role %s: %w", role, err)
	}
	return nil
}

func (s *Server) enableAuth(ctx context.Context, method string) error {
	auths, err := s.client.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return err
	}
	if _, ok := auths[method+"/"]; ok {
		return nil
	}
	return s.client.Sys().EnableAuthWithOptionsWithContext(ctx, method, &vault.EnableAuthOptions{Type: method})
}

func (s *Server) enableSecrets(ctx context.Context, path, kind string) error {
	mounts, err := s.client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return err
	}
	if _, ok := mounts[path+"/"]; ok {
		return nil
	}
	return s.client.Sys().MountWithContext(ctx, path, &vault.MountInput{Type: kind})
}

func boolPtr(b bool) *bool { return &b }

// lockedBuffer keeps the server's output for error messages.
type lockedBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *lockedBuffer) WriteLine(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

func (b *lockedBuffer) Last(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := max(0, len(b.lines)-n)
	return strings.Join(b.lines[from:], "\n")
}
