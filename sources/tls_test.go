package sources_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-cdc/sluice/sources"
	"github.com/sluice-cdc/sluice/sources/tlstest"
)

// serve answers TLS handshakes on loopback with the certificate and key.
func serve(t *testing.T, cert, key string) string {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				c.Read(make([]byte, 1))
			}()
		}
	}()
	return l.Addr().String()
}

func dial(addr string, cfg sources.TLS, host string) (sources.Transport, error) {
	tc, err := cfg.ClientConfig(host)
	if err != nil {
		return sources.Transport{}, err
	}
	c, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		return sources.Transport{}, err
	}
	defer c.Close()
	return sources.TransportOf(c, cfg.Mode), nil
}

func TestTLSModes(t *testing.T) {
	f := tlstest.New(t)
	good := serve(t, f.ServerCert, f.ServerKey)
	wrongName := serve(t, f.WrongNameCert, f.WrongNameKey)
	for _, c := range []struct {
		name string
		addr string
		cfg  sources.TLS
		host string
		want string // "" = connects; else a fragment of the error
	}{
		{"verify-full", good, sources.TLS{Mode: "verify-full", CA: f.CA}, "127.0.0.1", ""},
		{"verify-full by name", good, sources.TLS{Mode: "verify-full", CA: f.CA}, "localhost", ""},
		{"verify-full other CA", good, sources.TLS{Mode: "verify-full", CA: f.OtherCA}, "127.0.0.1", "unknown authority"},
		{"verify-full wrong name", wrongName, sources.TLS{Mode: "verify-full", CA: f.CA}, "127.0.0.1", "certificate for 127.0.0.1"},
		{"verify-full server_name", wrongName, sources.TLS{Mode: "verify-full", CA: f.CA, ServerName: tlstest.WrongName}, "127.0.0.1", ""},
		{"verify-ca wrong name", wrongName, sources.TLS{Mode: "verify-ca", CA: f.CA}, "127.0.0.1", ""},
		{"verify-ca other CA", good, sources.TLS{Mode: "verify-ca", CA: f.OtherCA}, "127.0.0.1", "unknown authority"},
		{"require anything", wrongName, sources.TLS{Mode: "require"}, "127.0.0.1", ""},
	} {
		tr, err := dial(c.addr, c.cfg, c.host)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want == "" && tr.Version == 0:
			t.Errorf("%s: no TLS version", c.name)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.name, err, c.want)
		case c.want != "" && !sources.IsTLSFailure(err):
			t.Errorf("%s: %v is not told as a TLS failure", c.name, err)
		}
	}
	if tc, err := (sources.TLS{Mode: "disable"}).ClientConfig("h"); tc != nil || err != nil {
		t.Errorf("disable: %v %v, want no TLS", tc, err)
	}
}

func TestTLSValidate(t *testing.T) {
	f := tlstest.New(t)
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	for _, c := range []struct {
		cfg  sources.TLS
		want []string // fragments, each in some problem; nil = valid
	}{
		{sources.TLS{}, nil},
		{sources.TLS{Mode: "verify-full", CA: f.CA, Cert: f.ClientCert, Key: f.ClientKey}, nil},
		{sources.TLS{Mode: "verify-ca"}, nil},
		{sources.TLS{Mode: "preferred"}, []string{`source.tls.mode "preferred"`, "use disable, require, verify-ca or verify-full"}},
		{sources.TLS{Mode: "verify-full", Cert: f.ClientCert}, []string{"source.tls.cert and source.tls.key go together"}},
		{sources.TLS{Mode: "verify-full", CA: "/nonexistent/ca.pem"}, []string{"source.tls.ca: cannot read", "readable PEM"}},
		{sources.TLS{Mode: "verify-full", CA: notPEM}, []string{"source.tls.ca:", "no PEM certificate"}},
		{sources.TLS{Mode: "require", CA: f.CA}, []string{"source.tls.ca is set but source.tls.mode require does not verify"}},
		{sources.TLS{Mode: "disable", ServerName: "x"}, []string{"source.tls.mode is disable"}},
		{sources.TLS{Mode: "verify-full", Cert: f.ClientCert, Key: f.ServerKey}, []string{"source.tls.cert and source.tls.key:"}},
	} {
		got := strings.Join(c.cfg.Validate(), "\n")
		if c.want == nil && got != "" {
			t.Errorf("%+v: %s", c.cfg, got)
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v: problems %q lack %q", c.cfg, got, w)
			}
		}
		if c.want != nil {
			if _, err := c.cfg.ClientConfig("h"); err == nil && c.cfg.Mode != "disable" {
				t.Errorf("%+v: ClientConfig accepted it", c.cfg)
			}
		}
	}
	if err := (sources.TLS{CA: f.CA}).NeedsMode(); err == nil || !strings.Contains(err.Error(), "set source.tls.mode") {
		t.Errorf("a CA without a mode: %v", err)
	}
}

func TestTLSWarning(t *testing.T) {
	for _, c := range []struct {
		host, mode string
		want       string // "" = no warning
	}{
		{"127.0.0.1", "", ""},
		{"localhost", "disable", ""},
		{"::1", "require", ""},
		{"/var/run/postgresql", "prefer", ""},
		{"db.example", "verify-full", ""},
		{"db.example", "", "source.tls.mode is unset: the connection is plaintext"},
		{"10.0.0.5", "require", "source.tls.mode is require: the server's certificate is not verified"},
		{"db.example", "prefer", "source.tls.mode is prefer"},
		{"db.example", "verify-ca", "not its name"},
	} {
		got := sources.TLSWarning(c.host, c.mode)
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("TLSWarning(%q, %q) = %q, want %q", c.host, c.mode, got, c.want)
		}
		if got != "" && !strings.Contains(got, "set source.tls.mode: verify-full") {
			t.Errorf("TLSWarning(%q, %q) = %q names no fix", c.host, c.mode, got)
		}
	}
}

func TestTransportString(t *testing.T) {
	for _, c := range []struct {
		tr   sources.Transport
		want string
	}{
		{sources.Transport{Mode: "disable"}, "plaintext"},
		{sources.Transport{Mode: "verify-full", Version: tls.VersionTLS13, CipherSuite: tls.TLS_AES_128_GCM_SHA256},
			"TLS 1.3, TLS_AES_128_GCM_SHA256, server verified (verify-full)"},
		{sources.Transport{Mode: "require", Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			"TLS 1.2, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, server not verified (require)"},
	} {
		if got := c.tr.String(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
	if !sources.IsTLSFailure(&tls.CertificateVerificationError{Err: errors.New("x")}) || sources.IsTLSFailure(net.ErrClosed) {
		t.Error("IsTLSFailure misjudges")
	}
}
