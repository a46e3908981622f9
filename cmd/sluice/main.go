// Command sluice is a change-data-capture sidecar: it tails a database's
// replication log and publishes every row change to NATS JetStream.
package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// defaultMemoryLimit is the soft limit on the Go heap when GOMEMLIMIT is not
// set. Left alone, the heap grows to twice what is live before a GC; what
// is live in a catch-up at 100k+ events/s is 35-55 MB (JetStream's block
// buffers and duplicate window, the messages in flight), so the limit
// keeps the process under 120 MB RSS (the binary's own pages come on top)
// at the cost of somewhat more frequent GCs (README "Performance").
const defaultMemoryLimit = 96 << 20

// clusteredMemoryLimit replaces it for sluice run when its embedded NATS
// is one node of a cluster holding replicated streams: the raft logs add
// to what is live, and under 96 MiB the GCs cost a fifth of the
// throughput of replicas 3 (sluice-bench pg --replicas 3: 0.73 of
// JetStream alone against 0.90 under 150 MiB).
const clusteredMemoryLimit = 160 << 20

// memoryLimit is the soft limit for a sidecar whose embedded server is
// clustered or not, unless GOMEMLIMIT sets it.
func memoryLimit(clustered bool) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if clustered {
		debug.SetMemoryLimit(clusteredMemoryLimit)
		return
	}
	debug.SetMemoryLimit(defaultMemoryLimit)
}

func main() {
	memoryLimit(false)
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "Change data capture from PostgreSQL and MySQL/MariaDB to NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCommand(), checkCommand(), backfillCommand(), statusCommand(), schemaCommand(), tailCommand(), applyCommand(), versionCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}
