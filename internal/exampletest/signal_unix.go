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

// signalGroup signals the process's group, and the process itself should it
// have left the group.
func signalGroup(cmd *exec.Cmd, sig syscall.Signal) {
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	_ = cmd.Process.Signal(sig)
}
