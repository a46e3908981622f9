// Package proctest runs a real server's process for tests (pgtest,
// mysqltest, vaulttest): in a process group of its own, as an unprivileged
// user when the tests run as root, with the tail of its output kept for
// error messages.
package proctest

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a started server process.
type Process struct {
	name string // what error messages call it, e.g. "pgtest: postgres"
	cmd  *exec.Cmd
	out  *Output
	done chan struct{} // closed once cmd.Wait has returned
	err  error         // cmd.Wait's result, valid after done
}

// Start starts cmd with its output going to out, as cred when it is not
// nil. name is how errors name the process ("pgtest: postgres").
func Start(name string, cmd *exec.Cmd, cred *syscall.Credential, out *Output) (*Process, error) {
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		// Own process group: a test's Ctrl-C must not reach the server
		// before the cleanup asks it for an orderly shutdown.
		Setpgid: true,
		// If the test binary dies without cleanup (go test -timeout), no
		// orphaned server is left behind.
		Pdeathsig: syscall.SIGKILL,
	}
	// Children inherit the output pipe; a straggler must not block Wait.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// WaitReady polls ready until it succeeds, the process exits, ctx ends or
// timeout passes; the errors quote the last lines of the output.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration, ready func(ctx context.Context) error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ready(attemptCtx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before accepting connections (%v); last log lines:\n%s", p.name, p.err, p.out.LastLines(20))
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%s not accepting connections after %v (last error: %v); last log lines:\n%s", p.name, timeout, err, p.out.LastLines(20))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends sig (the server's orderly shutdown) and kills the process
// group if it has not exited within timeout.
func (p *Process) Stop(sig syscall.Signal, timeout time.Duration) error {
	select {
	case <-p.done:
		return fmt.Errorf("%s had already exited: %v", p.name, p.err)
	default:
	}
	_ = syscall.Kill(p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not shut down within %v; killed", p.name, timeout)
	}
}

// Kill SIGKILLs the whole process group, so no child outlives the server,
// and waits for the process.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output forwards server output to a log and keeps its tail for error
// messages.
type Output struct {
	mu     sync.Mutex
	dst    io.Writer
	recent []byte
}

// NewOutput forwards to dst.
func NewOutput(dst io.Writer) *Output { return &Output{dst: dst} }

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.recent = append(o.recent, p...)
	if len(o.recent) > 64<<10 {
		o.recent = append([]byte(nil), o.recent[len(o.recent)-32<<10:]...)
	}
	// A failing log sink is ignored: returning its error would stop the
	// copy from the server's stderr pipe, which would then block on logging.
	_, _ = o.dst.Write(p)
	return len(p), nil
}

// Reset forgets the tail kept so far (a restart starts a new one).
func (o *Output) Reset() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.recent = nil
}

// LastLines returns the last n lines of the tail.
func (o *Output) LastLines(n int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return LastLines(o.recent, n)
}

// LastLines returns the last n lines of b.
func LastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// handed are the ports FreePort returned in this process. Tests that run
// in parallel each take ports and bind them a little later; the kernel may
// offer a port again once its probe is closed, so no port is handed twice.
var handed = struct {
	sync.Mutex
	ports map[int]bool
}{ports: map[int]bool{}}

// FreePort returns a loopback TCP port that was free a moment ago and that
// no other caller in this process got.
func FreePort() (int, error) {
	handed.Lock()
	defer handed.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handed.ports[port] {
			handed.ports[port] = true
			return port, nil
		}
	}
}

// Credential returns the first of the users named that exists, to run a
// server as when the tests run as root (servers refuse to run as root).
func Credential(users ...string) (*syscall.Credential, error) {
	for _, name := range users {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, err
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			return nil, err
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("running as root but found none of the users %s to run the server as", strings.Join(users, ", "))
}

// Traversable makes sure another user (who) can reach dir. os.MkdirTemp
// and t.TempDir create 0700 dirs, so the search bit is added to dir itself
// and to its ancestors inside the temp dir; anything else is reported, not
// changed.
func Traversable(dir, who string) error {
	tmp, _ := filepath.Abs(os.TempDir())
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			rel, err := filepath.Rel(tmp, d)
			inTemp := err == nil && rel != "." && !strings.HasPrefix(rel, "..")
			if !(d == dir || inTemp) {
				return fmt.Errorf("%s (mode %v) is not traversable by the %s user; use a Dir under %s", d, fi.Mode().Perm(), who, tmp)
			}
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return err
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
