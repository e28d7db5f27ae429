//go:build unix

package exampletest

import (
	"os/exec"
	"syscall"
)

var (
	terminate = syscall.SIGTERM
	kill      = syscall.SIGKILL
)

func ownProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// signalGroup signals the process's group, or the process alone should the
// group be gone. Once: a supervisor signals a process once, and a second
// SIGTERM in the middle of a drain is another test (a Node process whose
// handler is spent dies of it).
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) {
	if syscall.Kill(-cmd.Process.Pid, sig) != nil {
		_ = cmd.Process.Signal(sig)
	}
}
