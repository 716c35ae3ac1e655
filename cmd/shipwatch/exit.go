package main

import (
	"errors"
	"fmt"
	"io"
)

// Exit codes. They are part of the CLI's contract (docs/cli.md): scripts
// branch on them.
const (
	exitOK        = 0 // success; check: nothing to do; verify: allowed
	exitError     = 1 // bad flags or config, engine unreachable, internal error
	exitAvailable = 2 // check: at least one verified update is available
	exitFailed    = 3 // check: at least one target could not be checked; rollout: failed
	exitBlocked   = 4 // verify/rollout: verification decided no
	exitUndecided = 5 // verify/rollout: verification could not decide (retry later)
	exitRollback  = 6 // rollout: the update failed its health gate and was rolled back
)

// exitError carries an exit code through cobra's error return.
type codeError struct {
	code int
	err  error
}

func (e *codeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}

func (e *codeError) Unwrap() error { return e.err }

// withCode returns an error that makes the command exit with code; a nil
// err means "print nothing more, just exit with code".
func withCode(code int, err error) error { return &codeError{code: code, err: err} }

// exitCode maps a command's error to the process exit code and prints it.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ce *codeError
	if errors.As(err, &ce) {
		if ce.err != nil {
			fmt.Fprintln(stderr, "shipwatch:", ce.err)
		}
		return ce.code
	}
	fmt.Fprintln(stderr, "shipwatch:", err)
	return exitError
}
