package sidecar

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A listener that dies stops the HTTP server with an error that names the
// setting: Run's group then stops sluice with it.
func TestDeadListenerStopsServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() {
		served <- serveHTTP(context.Background(), &http.Server{Handler: http.NotFoundHandler()}, ln, "127.0.0.1:9090")
	}()
	ln.Close()
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "http.listen 127.0.0.1:9090: the HTTP server stopped") || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("serveHTTP = %v, want the listener's error naming http.listen", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serveHTTP went on serving on a closed listener")
	}
}

// The end of ctx is a clean stop.
func TestServeStopsWithContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveHTTP(ctx, &http.Server{Handler: http.NotFoundHandler()}, ln, "x") }()
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("serveHTTP after ctx ended = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serveHTTP did not stop with its context")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the port still accepts connections")
	}
}
