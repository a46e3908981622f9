// Package tlstest makes the certificates the TLS tests of the sources
// need: a CA, a server certificate it signs for this host (localhost,
// 127.0.0.1, ::1), one it signs for another name, and a second CA that
// signed nothing here. Every file is fresh per test; nothing is checked in.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// WrongName is the only name of the wrong-name certificate.
const WrongName = "wrong.example"

// Files are PEM files in a temp dir of the test.
type Files struct {
	CA                  string // the CA that signed both server certificates
	ServerCert          string // for localhost, 127.0.0.1 and ::1
	ServerKey           string
	WrongNameCert       string // signed by CA, for WrongName only
	WrongNameKey        string
	OtherCA             string // a CA that signed neither
	ClientCert          string // a client certificate signed by CA
	ClientKey           string
	caCert              *x509.Certificate
	caKey               *ecdsa.PrivateKey
	dir                 string
	serial              int64
	notBefore, notAfter time.Time
}

// New writes a fresh set of files into a temp dir of t.
func New(t testing.TB) *Files {
	t.Helper()
	f := &Files{dir: t.TempDir(), notBefore: time.Now().Add(-time.Hour), notAfter: time.Now().Add(24 * time.Hour)}
	var err error
	f.caCert, f.caKey, f.CA, err = f.ca("sluice test CA", "ca.pem")
	if err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	if _, _, f.OtherCA, err = f.ca("some other CA", "other-ca.pem"); err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	local := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if f.ServerCert, f.ServerKey, err = f.leaf("server", []string{"localhost"}, local, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	if f.WrongNameCert, f.WrongNameKey, err = f.leaf("wrong", []string{WrongName}, nil, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	if f.ClientCert, f.ClientKey, err = f.leaf("client", nil, nil, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("tlstest: %v", err)
	}
	return f
}

func (f *Files) ca(name, file string) (*x509.Certificate, *ecdsa.PrivateKey, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	f.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(f.serial), Subject: pkix.Name{CommonName: name},
		NotBefore: f.notBefore, NotAfter: f.notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, "", err
	}
	path := filepath.Join(f.dir, file)
	return cert, key, path, writePEM(path, "CERTIFICATE", der, 0o644)
}

func (f *Files) leaf(name string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) (string, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	f.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(f.serial), Subject: pkix.Name{CommonName: name},
		NotBefore: f.notBefore, NotAfter: f.notAfter,
		DNSNames: dns, IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.caCert, &key.PublicKey, f.caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	cert, keyPath := filepath.Join(f.dir, name+".pem"), filepath.Join(f.dir, name+"-key.pem")
	if err := writePEM(cert, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	return cert, keyPath, writePEM(keyPath, "PRIVATE KEY", keyDER, 0o600)
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode)
}
