//go:build !unix

package bridge

// openFileLimit reports no limit to derive MaxConns from: the platform has
// no getrlimit.
func openFileLimit() (uint64, bool) { return 0, false }
