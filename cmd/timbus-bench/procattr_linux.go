package main

import "syscall"

// sysProcAttr puts a child in a process group of its own and has the kernel
// kill it should the benchmark itself die without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
