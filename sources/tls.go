package sources

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// TLS modes, weakest first. The names are libpq's sslmode values, which
// MySQL's clients (--ssl-mode) share in spirit.
const (
	TLSDisable    = "disable"     // plaintext
	TLSRequire    = "require"     // encrypted; any certificate is accepted
	TLSVerifyCA   = "verify-ca"   // the chain must end in a trusted CA; any name
	TLSVerifyFull = "verify-full" // the chain, and the name must be the host's
)

// ErrTLS is a TLS handshake or certificate check that failed: the server
// presented no TLS, an untrusted certificate or one for another name. It
// is final, not a disconnection: retrying meets the same certificate.
var ErrTLS = errors.New("source TLS failed")

// TLS is source.tls: how sluice protects its connections to the database.
// The zero value leaves the driver's default (see each driver).
type TLS struct {
	Mode string `yaml:"mode"`
	// CA is a PEM file of the CAs that may sign the server's certificate;
	// empty = the system's roots. Only the verify modes use it.
	CA string `yaml:"ca"`
	// Cert and Key are a client certificate and its key (PEM), for servers
	// that ask for one (REQUIRE X509, clientcert=verify-full).
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName is the name verify-full expects in the certificate when it
	// differs from the DSN's host (a load balancer, an IP address).
	ServerName string `yaml:"server_name"`
}

// IsZero tells whether nothing of source.tls is set.
func (t TLS) IsZero() bool { return t == TLS{} }

// Verifies tells whether mode checks the server's certificate.
func Verifies(mode string) bool { return mode == TLSVerifyCA || mode == TLSVerifyFull }

// Validate lists every problem of t, each naming its setting and the fix.
// An empty Mode is allowed here: a DSN may still choose it, and the
// drivers refuse files without a mode once they know.
func (t TLS) Validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	switch t.Mode {
	case "", TLSDisable, TLSRequire, TLSVerifyCA, TLSVerifyFull:
	default:
		add("source.tls.mode %q is not a mode: use disable, require, verify-ca or verify-full", t.Mode)
	}
	if t.Mode == TLSDisable && (t.CA != "" || t.Cert != "" || t.Key != "" || t.ServerName != "") {
		add("source.tls.mode is disable but source.tls has certificates or a server_name: remove them, or choose verify-full")
	}
	if t.Mode == TLSRequire && t.CA != "" {
		// libpq quietly verifies against sslrootcert under require; sluice
		// says so instead of doing something the mode's name does not.
		add("source.tls.ca is set but source.tls.mode require does not verify the server: use verify-full (or verify-ca), or remove ca")
	}
	if (t.Cert == "") != (t.Key == "") {
		add("source.tls.cert and source.tls.key go together: set both (a client certificate and its key) or neither")
	}
	if t.CA != "" {
		if _, err := readCAs(t.CA); err != nil {
			add("source.tls.ca: %v", err)
		}
	}
	if t.Cert != "" && t.Key != "" {
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			add("source.tls.cert and source.tls.key: %v (both PEM, the key matching the certificate)", err)
		}
	}
	return p
}

// NeedsMode reports files or a name given without a mode: they would be
// ignored, and the connection plaintext, which is never what was meant.
func (t TLS) NeedsMode() error {
	if t.Mode == "" && (t.CA != "" || t.Cert != "" || t.Key != "" || t.ServerName != "") {
		return errors.New("source.tls has certificates or a server_name but no mode: set source.tls.mode (verify-full to check the server's certificate and name)")
	}
	return nil
}

// ClientConfig is the *tls.Config for connecting to host in t's mode, nil
// for disable (and for an empty mode). host is the DSN's host; the name
// verify-full checks is ServerName when set.
func (t TLS) ClientConfig(host string) (*tls.Config, error) {
	if t.Mode == "" || t.Mode == TLSDisable {
		return nil, nil
	}
	if p := t.Validate(); len(p) > 0 {
		return nil, errors.New(strings.Join(p, "; "))
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("source.tls.cert and source.tls.key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	var roots *x509.CertPool // nil: the system's roots
	if t.CA != "" {
		var err error
		if roots, err = readCAs(t.CA); err != nil {
			return nil, fmt.Errorf("source.tls.ca: %w", err)
		}
	}
	switch t.Mode {
	case TLSRequire:
		c.InsecureSkipVerify = true
	case TLSVerifyCA:
		// crypto/tls verifies the chain and the name together or not at
		// all: turn its check off and verify the chain alone.
		c.InsecureSkipVerify = true
		c.VerifyConnection = func(cs tls.ConnectionState) error { return verifyChain(cs, roots) }
	case TLSVerifyFull:
		c.RootCAs = roots
	}
	return c, nil
}

// verifyChain checks the server's chain against roots, not its name.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	_, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		// The same type crypto/tls returns, so callers tell one kind of
		// certificate failure by one type.
		return &tls.CertificateVerificationError{UnverifiedCertificates: cs.PeerCertificates, Err: err}
	}
	return nil
}

func readCAs(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the CA file: %w (give a readable PEM file of the CA certificates)", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate (give the CA's certificate, -----BEGIN CERTIFICATE-----)", path)
	}
	return pool, nil
}

// IsTLSFailure tells whether err is a failed TLS handshake or certificate
// check, whatever wraps it.
func IsTLSFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		record   tls.RecordHeaderError
	)
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &alert) || errors.As(err, &record)
}

// Transport is what a connection to the database turned out to be.
type Transport struct {
	// Mode is the mode the connection was made in: one of the TLS modes,
	// or a libpq sslmode (prefer, allow) from a PostgreSQL DSN.
	Mode        string
	Version     uint16 // tls.VersionTLS13 and the like; 0 = plaintext
	CipherSuite uint16
}

// TransportOf describes c, a connection made in mode.
func TransportOf(c net.Conn, mode string) Transport {
	t := Transport{Mode: mode}
	if tc, ok := c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		t.Version, t.CipherSuite = cs.Version, cs.CipherSuite
	}
	return t
}

// TransportOfState describes a handshake seen from tls.Config's
// VerifyConnection, for connections a library keeps to itself.
func TransportOfState(cs tls.ConnectionState, mode string) Transport {
	return Transport{Mode: mode, Version: cs.Version, CipherSuite: cs.CipherSuite}
}

// Verified tells whether the server's certificate was checked: the
// handshake succeeds in a verify mode only when it was.
func (t Transport) Verified() bool { return t.Version != 0 && Verifies(t.Mode) }

// String is "TLS 1.3, TLS_AES_128_GCM_SHA256, server verified
// (verify-full)", or "plaintext".
func (t Transport) String() string {
	if t.Version == 0 {
		return "plaintext"
	}
	verified := "server not verified"
	if t.Verified() {
		verified = "server verified"
	}
	return fmt.Sprintf("%s, %s, %s (%s)", tls.VersionName(t.Version), tls.CipherSuiteName(t.CipherSuite), verified, t.Mode)
}

// TLSWarning is the warning for connecting to host in mode, "" when there
// is none: on loopback nobody sits between sluice and the database, and
// verify-full is the only mode a man in the middle cannot defeat. mode ""
// means plaintext by default (a MySQL source with nothing set).
func TLSWarning(host, mode string) string {
	if mode == TLSVerifyFull || isLoopback(host) {
		return ""
	}
	var what string
	switch mode {
	case "", TLSDisable:
		what = "the connection is plaintext: passwords and rows cross the network readable"
	case TLSVerifyCA:
		what = "the certificate's chain is checked but not its name: any certificate of that CA passes"
	default: // require, and libpq's prefer and allow
		what = "the server's certificate is not verified: a man in the middle can read and change the stream"
	}
	shown := mode
	if shown == "" {
		shown = "unset"
	}
	return fmt.Sprintf("source host %s is not loopback and source.tls.mode is %s: %s; set source.tls.mode: verify-full (with source.tls.ca for a private CA)", host, shown, what)
}

// isLoopback tells whether host is this machine: localhost, a loopback
// address, or a Unix socket directory (PostgreSQL).
func isLoopback(host string) bool {
	if host == "localhost" || strings.HasPrefix(host, "/") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// TLSError explains a failed handshake with server: which certificate
// check failed, in words an operator can act on, and the setting to fix.
func TLSError(err error, server string) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	var why string
	switch {
	case errors.As(err, &unknown):
		why = "its certificate is signed by an unknown authority, not by a CA sluice trusts (source.tls.ca, or the system's roots without it): set source.tls.ca to the CA that signed the server's certificate"
	case errors.As(err, &hostname):
		why = fmt.Sprintf("its certificate's names do not match %q (name mismatch): connect by a name the certificate holds, or set source.tls.server_name to one", hostname.Host)
	case errors.As(err, &invalid):
		why = "its certificate is not valid (expired, not yet valid, or not for servers): renew the server's certificate"
	default:
		why = "the TLS handshake failed: check that the server has TLS enabled and source.tls.mode"
	}
	return fmt.Errorf("%w: %s: %s: %w", ErrTLS, server, why, err)
}
