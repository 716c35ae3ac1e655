// Package helper runs the verifier and the deployers of the lean agent in a
// helper process. The agent binary (shipwatch-agent) links only what an idle
// pass runs — discovery, the watcher, the state file, the API — and starts
// `shipwatch helper` when a pass has a candidate to verify or a target to
// roll out or back; the helper exits again once it has been idle for a
// while. Client is the agent's side (it implements pass.Verifier and
// deployer.Deployer); Serve is the helper's.
//
// The two processes talk over a pair of pipes (file descriptors 3 and 4 in
// the helper), one JSON object per line. The helper dies with the agent; if
// the helper dies while a rollout is in flight, the agent cannot know what
// the rollout did and exits too, so that its restart reconciles the rollout
// from its journal, as after any crash.
package helper

import (
	"context"
	"errors"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// Operations a request can ask for.
const (
	opVerify   = "verify"
	opDeploy   = "deploy"
	opRollback = "rollback"
	opCancel   = "cancel" // cancels the context of the call with the same ID
	// opAck says the agent has handled a step of the call with the same
	// ID (written it to the rollout journal): the deployer waits for it
	// before it goes on, as it waits for its progress callback in-process.
	opAck = "ack"
)

// request is one line from the agent to the helper.
type request struct {
	ID     uint64           `json:"id"`
	Op     string           `json:"op"`
	Image  *imageref.Ref    `json:"image,omitempty"`
	Plan   *deployer.Plan   `json:"plan,omitempty"`
	Target *deployer.Target `json:"target,omitempty"`
	To     string           `json:"to,omitempty"`
}

// response is one line from the helper to the agent: the greeting (ID 0),
// a step of a running call, or a call's final answer.
type response struct {
	ID      uint64           `json:"id"`
	Hello   *hello           `json:"hello,omitempty"`
	Step    *wireStep        `json:"step,omitempty"`
	Verdict *verdict.Verdict `json:"verdict,omitempty"`
	Result  *wireResult      `json:"result,omitempty"`
	// Err is set on a final answer to a request the helper could not run
	// (an unknown operation, a missing field).
	Err string `json:"err,omitempty"`
}

// hello is the helper's first line: it is ready, or says why it is not.
type hello struct {
	Version string `json:"version"`
	Err     string `json:"err,omitempty"`
}

type wireStep struct {
	Name   string        `json:"name"`
	Start  time.Time     `json:"start"`
	Took   time.Duration `json:"took"`
	Detail string        `json:"detail,omitempty"`
	Err    *wireError    `json:"err,omitempty"`
}

type wireResult struct {
	Outcome      deployer.Outcome `json:"outcome"`
	From         string           `json:"from,omitempty"`
	To           string           `json:"to,omitempty"`
	Running      string           `json:"running,omitempty"`
	Cause        *wireError       `json:"cause,omitempty"`
	ManualAction bool             `json:"manualAction,omitempty"`
	FailedDigest string           `json:"failedDigest,omitempty"`
	Logs         []string         `json:"logs,omitempty"`
	Steps        []wireStep       `json:"steps,omitempty"`
}

// wireError carries an error's message and what callers test it for:
// the deployer's sentinel errors (errors.Is) and a *deployer.HealthError
// (errors.As).
type wireError struct {
	Msg    string                `json:"msg"`
	Is     []string              `json:"is,omitempty"`
	Health *deployer.HealthError `json:"health,omitempty"`
}

// sentinels are the errors that keep their identity across the boundary.
var sentinels = []struct {
	name string
	err  error
}{
	{"drift", deployer.ErrDrift},
	{"conflict", deployer.ErrConflict},
	{"not-found", deployer.ErrNotFound},
	{"digest-mismatch", deployer.ErrDigestMismatch},
	{"unsupported", deployer.ErrUnsupported},
	{"no-previous", deployer.ErrNoPrevious},
	{"canceled", context.Canceled},
	{"deadline", context.DeadlineExceeded},
}

func encodeError(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Msg: err.Error()}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			w.Is = append(w.Is, s.name)
		}
	}
	var he *deployer.HealthError
	if errors.As(err, &he) {
		w.Health = he
	}
	return w
}

// remoteError is an error that happened in the helper, with the same
// message and the same answers to errors.Is and errors.As.
type remoteError struct {
	msg     string
	wrapped []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.wrapped }

func (w *wireError) decode() error {
	if w == nil {
		return nil
	}
	e := &remoteError{msg: w.Msg}
	for _, name := range w.Is {
		for _, s := range sentinels {
			if s.name == name {
				e.wrapped = append(e.wrapped, s.err)
			}
		}
	}
	if w.Health != nil {
		e.wrapped = append(e.wrapped, w.Health)
	}
	return e
}

func encodeStep(s deployer.Step) wireStep {
	return wireStep{Name: s.Name, Start: s.Start, Took: s.Took, Detail: s.Detail, Err: encodeError(s.Err)}
}

func (s wireStep) decode() deployer.Step {
	return deployer.Step{Name: s.Name, Start: s.Start, Took: s.Took, Detail: s.Detail, Err: s.Err.decode()}
}

func encodeResult(r deployer.Result) *wireResult {
	w := &wireResult{Outcome: r.Outcome, From: r.From, To: r.To, Running: r.Running, Cause: encodeError(r.Cause),
		ManualAction: r.ManualAction, FailedDigest: r.FailedDigest, Logs: r.Logs}
	for _, s := range r.Steps {
		w.Steps = append(w.Steps, encodeStep(s))
	}
	return w
}

func (w *wireResult) decode() deployer.Result {
	r := deployer.Result{Outcome: w.Outcome, From: w.From, To: w.To, Running: w.Running, Cause: w.Cause.decode(),
		ManualAction: w.ManualAction, FailedDigest: w.FailedDigest, Logs: w.Logs}
	for _, s := range w.Steps {
		r.Steps = append(r.Steps, s.decode())
	}
	return r
}
