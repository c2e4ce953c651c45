// Package mlog stands in for monis.app/mlog, which the Go module proxy
// reachable from this project's machines refuses to serve. The driver's
// pkg/secrets-store links it only for one mlog.Fatal in server.go (the
// driver's own gRPC server start-up), which driverclient never runs; the
// provider client and the file writer under test do not touch it.
package mlog

import (
	"fmt"
	"os"
)

// Fatal prints err and exits, as the real mlog.Fatal does.
func Fatal(err error, keysAndValues ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"fatal:", err}, keysAndValues...)...)
	os.Exit(255)
}
