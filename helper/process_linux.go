package helper

import "syscall"

// dieWithParent makes the kernel kill the helper when the agent that
// started it dies (even by SIGKILL): a helper must never go on changing a
// target that the agent's next start is about to reconcile. The helper also
// exits when its request pipe closes with calls running (ErrAgentGone).
func dieWithParent(a *syscall.SysProcAttr) *syscall.SysProcAttr {
	a.Pdeathsig = syscall.SIGKILL
	return a
}
