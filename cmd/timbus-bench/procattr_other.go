//go:build !linux

package main

import "syscall"

// sysProcAttr puts a child in a process group of its own. Only Linux can
// have the kernel kill it should the benchmark die without cleaning up.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
