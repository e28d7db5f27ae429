//go:build unix

package exampletest

import "syscall"

var terminate = syscall.SIGTERM
