package helper

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// The helper's ends of the pipes: file descriptors 3 and 4.
const (
	requestsFD  = 3
	responsesFD = 4
)

// Command returns a Start function that runs the helper binary at path
// with args, its stdout and stderr going to logs. The helper is killed if
// the agent dies (see dieWithParent).
func Command(path string, args []string, logs io.Writer) func() (*Conn, error) {
	return func() (*Conn, error) {
		reqR, reqW, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		respR, respW, err := os.Pipe()
		if err != nil {
			_, _ = reqR.Close(), reqW.Close()
			return nil, err
		}
		cmd := exec.Command(path, args...)
		cmd.Stdin = nil
		cmd.Stdout, cmd.Stderr = logs, logs
		cmd.ExtraFiles = []*os.File{reqR, respW} // 3 and 4 in the helper
		cmd.SysProcAttr = dieWithParent(&syscall.SysProcAttr{})
		err = cmd.Start()
		_, _ = reqR.Close(), respW.Close() // the helper's ends
		if err != nil {
			_, _ = reqW.Close(), respR.Close()
			return nil, fmt.Errorf("start the helper %s: %w", path, err)
		}
		return &Conn{
			Requests:  reqW,
			Responses: respR,
			Wait: func() error {
				err := cmd.Wait()
				_ = respR.Close()
				return err
			},
			Kill: func() { _ = cmd.Process.Kill() },
		}, nil
	}
}

// Pipes returns the helper's ends of the pipes the agent opened for it.
func Pipes() (requests io.ReadCloser, responses io.WriteCloser, err error) {
	req, resp := os.NewFile(requestsFD, "requests"), os.NewFile(responsesFD, "responses")
	if req == nil || resp == nil {
		return nil, nil, fmt.Errorf("no pipes from an agent: the helper is started by shipwatch-agent, not by hand")
	}
	for _, f := range []*os.File{req, resp} {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
			return nil, nil, fmt.Errorf("file descriptor %d is not a pipe from an agent: the helper is started by shipwatch-agent, not by hand", f.Fd())
		}
	}
	return req, resp, nil
}
