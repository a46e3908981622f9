// Package credentials fetches database logins from HashiCorp Vault: static
// ones from a KV v2 secret, or dynamic ones from the database secrets engine,
// whose leases it renews and, when they can be renewed no further, replaces.
package credentials

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/sluice-cdc/sluice/sources"
)

// Errors, each wrapped with what to fix.
var (
	ErrSealed           = errors.New("vault is sealed")
	ErrUnreachable      = errors.New("vault is unreachable")
	ErrPermissionDenied = errors.New("vault denied access")
	ErrNotFound         = errors.New("no secret at that path in vault")
	ErrMissingField     = errors.New("secret lacks a field")
	ErrAuth             = errors.New("vault login failed")
)

// Config says where a source's login lives in Vault.
type Config struct {
	Address  string    `yaml:"address"` // "" = $VAULT_ADDR
	Auth     Auth      `yaml:"auth"`
	KV       *KV       `yaml:"kv"`       // static login from a KV v2 secret, or
	Database *Database `yaml:"database"` // dynamic login from the database secrets engine
	TLS      TLS       `yaml:"tls"`
	// StartupTimeout bounds how long the first login waits out a sealed or
	// unreachable Vault before sluice gives up.
	StartupTimeout time.Duration `yaml:"startup_timeout"`
}

// Auth is how sluice logs in to Vault.
type Auth struct {
	Method    string `yaml:"method"`     // token (default), approle, kubernetes
	TokenFile string `yaml:"token_file"` // token: read the token from this file (Vault agent's sink); else $VAULT_TOKEN
	Mount     string `yaml:"mount"`      // approle and kubernetes: the auth mount, default the method's name
	// AppRole.
	RoleID       string `yaml:"role_id"`
	SecretIDFile string `yaml:"secret_id_file"` // else $VAULT_SECRET_ID
	// Kubernetes.
	Role    string `yaml:"role"`
	JWTFile string `yaml:"jwt_file"` // default the pod's service account token
}

// KV is a KV v2 secret holding a username and password.
type KV struct {
	Mount         string `yaml:"mount"` // default "secret"
	Path          string `yaml:"path"`
	UsernameField string `yaml:"username_field"` // default "username"
	PasswordField string `yaml:"password_field"` // default "password"
}

// Database is a role of the database secrets engine.
type Database struct {
	Mount string `yaml:"mount"` // default "database"
	Role  string `yaml:"role"`
}

// TLS configures the connection to Vault; $VAULT_CACERT and friends apply too.
type TLS struct {
	CACert     string `yaml:"ca_cert"`
	ServerName string `yaml:"server_name"`
}

// Vault hands out database logins from Vault.
type Vault struct {
	cfg    Config
	client *vault.Client
	log    *slog.Logger

	mu           sync.Mutex
	current      *sources.Login // the login in force, until it expires
	expire       func()         // marks a dynamic current login expiring; nil for static ones
	watched      string         // the Vault token whose lifetime is being watched
	stopWatch    func()         // stops watching it
	tokenExpired bool           // that token can be renewed no further
}

// New connects to Vault and reads a first login, waiting out a sealed or
// unreachable Vault for up to StartupTimeout: sluice never starts with a
// half-read login.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Vault, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	vc := vault.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, VAULT_TLS_SERVER_NAME...
	if vc.Error != nil {
		return nil, fmt.Errorf("vault client configuration: %w", vc.Error)
	}
	if cfg.Address != "" {
		vc.Address = cfg.Address
	}
	if cfg.TLS.CACert != "" || cfg.TLS.ServerName != "" {
		if err := vc.ConfigureTLS(&vault.TLSConfig{CACert: cfg.TLS.CACert, TLSServerName: cfg.TLS.ServerName}); err != nil {
			return nil, fmt.Errorf("vault TLS settings (source.credentials.vault.tls): %w", err)
		}
	}
	vc.MaxRetries = 0 // retries are ours, with messages that say why
	client, err := vault.NewClient(vc)
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	client.SetToken("") // only the configured auth method decides the token
	v := &Vault{cfg: cfg, client: client, log: log}
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = 30 * time.Second
	}
	deadline := time.Now().Add(cfg.StartupTimeout)
	for attempt := 1; ; attempt++ {
		_, err := v.Login(ctx)
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, sources.ErrDisconnected) || time.Now().After(deadline) {
			return nil, err
		}
		log.Warn("waiting for Vault", "attempt", attempt, "error", err)
		wait := min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(wait, time.Until(deadline)+time.Millisecond)):
		}
	}
}

// Login returns the login in force, or reads a fresh one when there is none
// or it is expiring. Sealed and unreachable Vaults are transient errors
// (wrapping sources.ErrDisconnected): the source retries with backoff.
func (v *Vault) Login(ctx context.Context) (sources.Login, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.current != nil && !closed(v.current.Expiring) {
		return *v.current, nil
	}
	if err := v.authenticate(ctx); err != nil {
		return sources.Login{}, err
	}
	v.watchToken(ctx)
	var login sources.Login
	var err error
	if v.cfg.Database != nil {
		login, err = v.dynamic(ctx)
	} else {
		login, err = v.static(ctx)
	}
	if err != nil {
		return sources.Login{}, err
	}
	v.current = &login
	return login, nil
}

// Rejected drops l if it is the login in force, so the next Login reads a
// fresh one: the database refused it (a revoked lease, a rotated password).
func (v *Vault) Rejected(l sources.Login) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.current == nil || v.current.User != l.User || v.current.Password != l.Password {
		return
	}
	v.log.Warn("the database refused the login from Vault; reading a fresh one", "user", l.User)
	v.dropCurrent()
}

// dropCurrent forgets the login in force; v.mu must be held.
func (v *Vault) dropCurrent() {
	if v.expire != nil {
		v.expire()
		v.expire = nil
	}
	v.current = nil
}

// watchToken keeps the Vault token alive. Dynamic leases die with the token
// that read them, so when it can be renewed no further the login in force is
// marked expiring too, and the next Login authenticates again. v.mu must be
// held.
func (v *Vault) watchToken(ctx context.Context) {
	token := v.client.Token()
	if token == v.watched {
		return
	}
	if v.stopWatch != nil {
		v.stopWatch()
		v.stopWatch = nil
	}
	v.watched, v.tokenExpired = token, false
	self, err := v.client.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || self == nil {
		v.log.Warn("cannot look up the Vault token, so it is not renewed (grant auth/token/lookup-self)", "error", errText(err))
		return
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	switch {
	case ttl == 0:
		return // a token without a TTL never expires
	case !renewable:
		v.log.Warn("the Vault token is not renewable; sluice needs a fresh one before it expires", "expires_in", ttl.Round(time.Second).String())
		return
	}
	w, err := v.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: &vault.Secret{
		Auth: &vault.SecretAuth{ClientToken: token, Renewable: true, LeaseDuration: int(ttl.Seconds())},
	}})
	if err != nil {
		v.log.Warn("cannot renew the Vault token", "error", err)
		return
	}
	stop := make(chan struct{})
	var once sync.Once
	v.stopWatch = func() { once.Do(func() { close(stop) }) }
	go w.Start()
	go func() {
		defer w.Stop()
		select {
		case err := <-w.DoneCh():
			v.log.Info("vault token expiring; logging in to Vault again", "reason", errText(err))
			v.mu.Lock()
			if v.watched == token {
				v.tokenExpired = true
				v.dropCurrent()
			}
			v.mu.Unlock()
		case <-stop:
		}
	}()
}

func closed(c <-chan struct{}) bool {
	if c == nil {
		return false
	}
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// authenticate sets the client's token per the auth method.
func (v *Vault) authenticate(ctx context.Context) error {
	a := v.cfg.Auth
	switch a.Method {
	case "", "token":
		token := os.Getenv("VAULT_TOKEN")
		if a.TokenFile != "" {
			// Re-read every time: Vault agent rewrites the file on renewal.
			b, err := os.ReadFile(a.TokenFile)
			if err != nil {
				return fmt.Errorf("%w: read token file (source.credentials.vault.auth.token_file): %w", ErrAuth, err)
			}
			token = strings.TrimSpace(string(b))
		}
		if token == "" {
			return fmt.Errorf("%w: no Vault token: set VAULT_TOKEN or source.credentials.vault.auth.token_file, or use approle or kubernetes auth", ErrAuth)
		}
		v.client.SetToken(token)
		return nil
	case "approle", "kubernetes":
		if v.client.Token() != "" && !v.tokenExpired {
			return nil
		}
		mount := a.Mount
		if mount == "" {
			mount = a.Method
		}
		data := map[string]any{}
		if a.Method == "approle" {
			secretID := os.Getenv("VAULT_SECRET_ID")
			if a.SecretIDFile != "" {
				b, err := os.ReadFile(a.SecretIDFile)
				if err != nil {
					return fmt.Errorf("%w: read secret id file (source.credentials.vault.auth.secret_id_file): %w", ErrAuth, err)
				}
				secretID = strings.TrimSpace(string(b))
			}
			data["role_id"], data["secret_id"] = a.RoleID, secretID
		} else {
			path := a.JWTFile
			if path == "" {
				path = "/var/run/secrets/kubernetes.io/serviceaccount/token"
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("%w: read the service account token: %w", ErrAuth, err)
			}
			data["role"], data["jwt"] = a.Role, strings.TrimSpace(string(b))
		}
		v.client.SetToken("")
		secret, err := v.client.Logical().WriteWithContext(ctx, "auth/"+mount+"/login", data)
		if err != nil {
			return v.explain(err, "log in with "+a.Method+" at auth/"+mount)
		}
		if secret == nil || secret.Auth == nil {
			return fmt.Errorf("%w: %s login at auth/%s returned no token", ErrAuth, a.Method, mount)
		}
		v.client.SetToken(secret.Auth.ClientToken)
		return nil
	}
	return fmt.Errorf("%w: unknown auth method %q (use token, approle or kubernetes)", ErrAuth, a.Method)
}

// static reads a username and password from a KV v2 secret.
func (v *Vault) static(ctx context.Context) (sources.Login, error) {
	kv := *v.cfg.KV
	if kv.Mount == "" {
		kv.Mount = "secret"
	}
	if kv.UsernameField == "" {
		kv.UsernameField = "username"
	}
	if kv.PasswordField == "" {
		kv.PasswordField = "password"
	}
	where := kv.Mount + "/" + kv.Path
	secret, err := v.client.KVv2(kv.Mount).Get(ctx, kv.Path)
	if errors.Is(err, vault.ErrSecretNotFound) {
		return sources.Login{}, fmt.Errorf("%w: %s: write it (vault kv put %s %s=... %s=...) or fix source.credentials.vault.kv",
			ErrNotFound, where, where, kv.UsernameField, kv.PasswordField)
	}
	if err != nil {
		return sources.Login{}, v.explain(err, "read "+where)
	}
	user, err := field(secret.Data, kv.UsernameField, where, "username_field")
	if err != nil {
		return sources.Login{}, err
	}
	password, err := field(secret.Data, kv.PasswordField, where, "password_field")
	if err != nil {
		return sources.Login{}, err
	}
	return sources.Login{User: user, Password: password}, nil
}

// field reads one string field; its error names the fields that exist,
// never their values.
func field(data map[string]any, name, where, setting string) (string, error) {
	if s, ok := data[name].(string); ok && s != "" {
		return s, nil
	}
	var have []string
	for k := range data {
		have = append(have, k)
	}
	if setting == "" {
		return "", fmt.Errorf("%w: %s returned no %q (it has %v)", ErrMissingField, where, name, have)
	}
	return "", fmt.Errorf("%w: secret %s has no field %q (it has %v): add it, or set source.credentials.vault.kv.%s",
		ErrMissingField, where, name, have, setting)
}

// dynamic reads a fresh login from the database secrets engine and watches
// its lease: renewed while it can be, and marked expiring when it cannot,
// so the source reconnects with the next one before the database drops it.
func (v *Vault) dynamic(ctx context.Context) (sources.Login, error) {
	db := *v.cfg.Database
	if db.Mount == "" {
		db.Mount = "database"
	}
	path := db.Mount + "/creds/" + db.Role
	secret, err := v.client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return sources.Login{}, v.explain(err, "read "+path)
	}
	if secret == nil {
		return sources.Login{}, fmt.Errorf("%w: %s: is role %q defined in the database secrets engine at %s?", ErrNotFound, path, db.Role, db.Mount)
	}
	user, err := field(secret.Data, "username", path, "")
	if err != nil {
		return sources.Login{}, err
	}
	password, err := field(secret.Data, "password", path, "")
	if err != nil {
		return sources.Login{}, err
	}
	expiring := make(chan struct{})
	var once sync.Once
	expire := func() { once.Do(func() { close(expiring) }) }
	w, err := v.client.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		return sources.Login{}, fmt.Errorf("watch lease of %s: %w", path, err)
	}
	go w.Start()
	go func() {
		defer w.Stop()
		for {
			select {
			case r := <-w.RenewCh():
				v.log.Debug("database login renewed", "user", user, "lease_seconds", r.Secret.LeaseDuration)
			case err := <-w.DoneCh():
				// The lease is at its max TTL, was revoked, or cannot be
				// renewed: switch to a fresh login now, while this one works.
				v.log.Info("database login expiring; reconnecting with a fresh one", "user", user, "reason", errText(err))
				expire()
				return
			case <-expiring: // dropped: rejected, or its token expired
				return
			}
		}
	}()
	v.expire = expire
	v.log.Info("database login issued by Vault", "user", user, "lease_seconds", secret.LeaseDuration, "renewable", secret.Renewable)
	return sources.Login{User: user, Password: password, Expiring: expiring}, nil
}

func errText(err error) string {
	if err == nil {
		return "lease at its max TTL"
	}
	return err.Error()
}

// explain turns a Vault client error into one that says what to fix.
// Sealed and unreachable are transient: they wrap sources.ErrDisconnected.
func (v *Vault) explain(err error, what string) error {
	addr := v.client.Address()
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == 503 && strings.Contains(strings.ToLower(msg), "sealed"):
			return fmt.Errorf("%w: %w at %s: unseal it (vault operator unseal); sluice retries", sources.ErrDisconnected, ErrSealed, addr)
		case (re.StatusCode == 400 || re.StatusCode == 403) && strings.HasPrefix(what, "log in"):
			return fmt.Errorf("%w: %s at %s (%s): check role_id and secret_id (secret_id_file or VAULT_SECRET_ID), or the kubernetes role and its bound service account",
				ErrAuth, what, addr, msg)
		case re.StatusCode == 403 && v.tokenExpired:
			return fmt.Errorf("%w: %s at %s: the Vault token expired and cannot be renewed: give sluice a fresh one (auth.token_file kept fresh by Vault agent, or approle or kubernetes auth)", ErrPermissionDenied, what, addr)
		case re.StatusCode == 403:
			return fmt.Errorf("%w: %s at %s (%s): grant the token its source's policy sluice-<source> (deploy/vault/setup.sh writes it from deploy/vault/sluice-policy.hcl.tmpl)", ErrPermissionDenied, what, addr, msg)
		case re.StatusCode >= 500:
			return fmt.Errorf("%w: %s at %s: vault answered %d (%s)", sources.ErrDisconnected, what, addr, re.StatusCode, msg)
		}
		return fmt.Errorf("%s at %s: vault answered %d (%s)", what, addr, re.StatusCode, msg)
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return fmt.Errorf("%w: %w at %s: %s failed (%v): is Vault running, and is source.credentials.vault.address (or VAULT_ADDR) right?",
			sources.ErrDisconnected, ErrUnreachable, addr, what, rootCause(err))
	}
	return fmt.Errorf("%s at %s: %w", what, addr, err)
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// Validate lists every problem of a Vault configuration.
func (c Config) Validate() []string {
	var p []string
	switch {
	case c.KV == nil && c.Database == nil:
		p = append(p, "source.credentials.vault needs kv: {mount, path} or database: {mount, role}")
	case c.KV != nil && c.Database != nil:
		p = append(p, "source.credentials.vault: give kv or database, not both")
	case c.KV != nil && c.KV.Path == "":
		p = append(p, "source.credentials.vault.kv.path is required")
	case c.Database != nil && c.Database.Role == "":
		p = append(p, "source.credentials.vault.database.role is required")
	}
	switch c.Auth.Method {
	case "", "token":
	case "approle":
		if c.Auth.RoleID == "" {
			p = append(p, "source.credentials.vault.auth.role_id is required for approle")
		}
	case "kubernetes":
		if c.Auth.Role == "" {
			p = append(p, "source.credentials.vault.auth.role is required for kubernetes")
		}
	default:
		p = append(p, fmt.Sprintf("source.credentials.vault.auth.method %q: use token, approle or kubernetes", c.Auth.Method))
	}
	return p
}

// Secret reads one field of a KV v2 secret with sluice's Vault login: a
// key sluice needs besides the database login (privacy.hash_key_vault).
func (v *Vault) Secret(ctx context.Context, mount, path, name string) (string, error) {
	if mount == "" {
		mount = "secret"
	}
	where := mount + "/" + path
	secret, err := v.client.KVv2(mount).Get(ctx, path)
	if errors.Is(err, vault.ErrSecretNotFound) {
		return "", fmt.Errorf("%w: %s: write it (vault kv put %s %s=...)", ErrNotFound, where, where, name)
	}
	if err != nil {
		return "", v.explain(err, "read "+where)
	}
	return field(secret.Data, name, where, "")
}
