//go:build unix

package bridge

import "syscall"

func openFileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	// RLIM_INFINITY is the largest value of the field's type; on some
	// systems the field is signed.
	limit := uint64(rl.Cur)
	if limit >= 1<<62 {
		return unlimited, true
	}
	return limit, true
}
