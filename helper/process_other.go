//go:build !linux

package helper

import "syscall"

// dieWithParent: only Linux can have the kernel kill the helper with the
// agent; elsewhere the helper exits when its request pipe closes with calls
// running (ErrAgentGone).
func dieWithParent(a *syscall.SysProcAttr) *syscall.SysProcAttr { return a }
