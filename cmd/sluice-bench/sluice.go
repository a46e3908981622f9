package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// findSluice resolves the sluice binary: the flag, then next to this
// binary, then bin/sluice, then $PATH.
func findSluice(flag string) (string, error) {
	if flag != "" {
		if _, err := os.Stat(flag); err != nil {
			return "", fmt.Errorf("--sluice %s: %w", flag, err)
		}
		return filepath.Abs(flag)
	}
	var tried []string
	if self, err := os.Executable(); err == nil {
		tried = append(tried, filepath.Join(filepath.Dir(self), "sluice"))
	}
	tried = append(tried, filepath.Join("bin", "sluice"))
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return filepath.Abs(p)
		}
	}
	if p, err := exec.LookPath("sluice"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no sluice binary found (looked at %s and in $PATH): run `make build` or pass --sluice PATH",
		strings.Join(tried, ", "))
}

// sluiceProc is one `sluice run` or `sluice apply` child process.
type sluiceProc struct {
	cmd     *exec.Cmd
	http    string // host:port of /readyz
	logPath string
	done    chan struct{}
	err     error
}

// storeKeyEnv holds the store key of --store-encryption for the child.
const storeKeyEnv = "SLUICE_BENCH_STORE_KEY"

func startSluice(bin, config, logPath, httpAddr, cpuProfile string, env []string) (*sluiceProc, error) {
	args := []string{"run", "--config", config}
	if cpuProfile != "" {
		args = append(args, "--cpuprofile", cpuProfile)
	}
	return startProc(bin, args, logPath, httpAddr, env)
}

// startProc starts bin with args, its output appended to logPath; httpAddr
// is where waitReady asks, "" for a command without an HTTP port.
func startProc(bin string, args []string, logPath, httpAddr string, env []string) (*sluiceProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &sluiceProc{cmd: cmd, http: httpAddr, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// waitReady waits until sluice has its log open and JetStream answers.
func (p *sluiceProc) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		resp, err := client.Get("http://" + p.http + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("sluice exited before it was ready (%v); its log:\n%s", p.err, tail(p.logPath, 20))
		case <-ctx.Done():
			return fmt.Errorf("sluice not ready after 2m; its log:\n%s", tail(p.logPath, 20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM, as an operator would, and waits for the drain. Once
// sluice has exited, stop returns at once with the same result, so a
// deferred stop may follow one whose error is checked.
func (p *sluiceProc) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("sluice did not stop within 1m of SIGTERM")
	}
	var exit *exec.ExitError
	if errors.As(p.err, &exit) {
		return fmt.Errorf("sluice exited with %w", p.err)
	}
	return nil
}

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func (p *sluiceProc) peakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, fmt.Errorf("read sluice's memory use: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// heapProfile saves sluice's heap profile (live objects, after a GC) to
// path; "" does nothing.
func (p *sluiceProc) heapProfile(path string) error {
	if path == "" {
		return nil
	}
	resp, err := http.Get("http://" + p.http + "/debug/pprof/heap?gc=1")
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// tail is the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
