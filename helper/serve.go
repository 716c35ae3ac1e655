package helper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// Verifier is what the helper verifies with (*verify.Verifier).
type Verifier interface {
	Verify(ctx context.Context, image imageref.Ref) verdict.Verdict
}

// Parts are what a helper runs on the agent's behalf.
type Parts struct {
	Verifier  Verifier
	Deployers map[deployer.Kind]deployer.Deployer
	Version   string
	Logger    zerolog.Logger
}

// ErrAgentGone is returned by Serve when the agent's pipe closed while
// calls were still running: the agent died (a stopping agent waits for its
// calls), and the helper must not go on changing targets on its own — the
// agent's next start reconciles them from their journals.
var ErrAgentGone = errors.New("the agent closed the helper's pipe while calls were running")

// Hello tells the agent why the helper cannot serve (it exits after).
func Hello(w io.Writer, version string, err error) error {
	h := &hello{Version: version}
	if err != nil {
		h.Err = err.Error()
	}
	return json.NewEncoder(w).Encode(response{Hello: h})
}

// Serve greets the agent on w, then runs the calls that arrive on r, each
// in its own goroutine, until r ends. It returns nil when r ends with no
// call running, ErrAgentGone when calls were still running.
func Serve(ctx context.Context, r io.Reader, w io.Writer, p Parts) error {
	s := &server{parts: p, enc: json.NewEncoder(w), calls: map[uint64]*serverCall{}, gone: make(chan struct{})}
	defer close(s.gone)
	if err := s.send(response{Hello: &hello{Version: p.Version}}); err != nil {
		return fmt.Errorf("greet the agent: %w", err)
	}
	dec := json.NewDecoder(r)
	for {
		var req request
		if err := dec.Decode(&req); err != nil {
			s.mu.Lock()
			running := len(s.calls)
			s.mu.Unlock()
			if running > 0 {
				return ErrAgentGone
			}
			if errors.Is(err, io.EOF) {
				s.wg.Wait()
				return nil
			}
			return fmt.Errorf("read a request: %w", err)
		}
		if req.Op == opCancel || req.Op == opAck {
			s.mu.Lock()
			if c, ok := s.calls[req.ID]; ok {
				if req.Op == opCancel {
					c.cancel()
				} else {
					select {
					case c.acks <- struct{}{}:
					default:
					}
				}
			}
			s.mu.Unlock()
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		s.mu.Lock()
		if _, dup := s.calls[req.ID]; dup || req.ID == 0 {
			s.mu.Unlock()
			cancel()
			_ = s.send(response{ID: req.ID, Err: fmt.Sprintf("call ID %d is in use", req.ID)})
			continue
		}
		call := &serverCall{cancel: cancel, acks: make(chan struct{}, 1)}
		s.calls[req.ID] = call
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			resp := s.run(cctx, req, call.acks)
			s.mu.Lock()
			delete(s.calls, req.ID)
			s.mu.Unlock()
			cancel()
			if err := s.send(resp); err != nil {
				s.parts.Logger.Error().Err(err).Uint64("call", req.ID).Msg("helper: cannot answer the agent")
			}
		}()
	}
}

type server struct {
	parts Parts
	encMu sync.Mutex
	enc   *json.Encoder
	mu    sync.Mutex
	calls map[uint64]*serverCall
	wg    sync.WaitGroup
	gone  chan struct{} // closed when Serve returns
}

type serverCall struct {
	cancel context.CancelFunc
	acks   chan struct{}
}

func (s *server) send(r response) error {
	s.encMu.Lock()
	defer s.encMu.Unlock()
	return s.enc.Encode(r)
}

func (s *server) run(ctx context.Context, req request, acks <-chan struct{}) response {
	progress := func(st deployer.Step) {
		ws := encodeStep(st)
		if err := s.send(response{ID: req.ID, Step: &ws}); err != nil {
			s.parts.Logger.Error().Err(err).Uint64("call", req.ID).Msg("helper: cannot send a step to the agent")
			return
		}
		select {
		case <-acks:
		case <-s.gone:
		}
	}
	switch {
	case req.Op == opVerify && req.Image != nil && s.parts.Verifier != nil:
		v := s.parts.Verifier.Verify(ctx, *req.Image)
		return response{ID: req.ID, Verdict: &v}
	case req.Op == opDeploy && req.Plan != nil:
		d, err := s.deployer(req.Plan.Target.Kind)
		if err != nil {
			return response{ID: req.ID, Result: encodeResult(deployer.Result{Outcome: deployer.Failed, From: req.Plan.Target.Digest, To: req.Plan.To.Digest, Cause: err})}
		}
		return response{ID: req.ID, Result: encodeResult(d.Deploy(ctx, *req.Plan, progress))}
	case req.Op == opRollback && req.Target != nil:
		d, err := s.deployer(req.Target.Kind)
		if err != nil {
			return response{ID: req.ID, Result: encodeResult(deployer.Result{Outcome: deployer.Failed, From: req.Target.Digest, To: req.To, Cause: err})}
		}
		return response{ID: req.ID, Result: encodeResult(d.Rollback(ctx, *req.Target, req.To, progress))}
	}
	return response{ID: req.ID, Err: fmt.Sprintf("helper: cannot run %q with the fields given", req.Op)}
}

func (s *server) deployer(k deployer.Kind) (deployer.Deployer, error) {
	if d, ok := s.parts.Deployers[k]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w: the helper has no deployer for %s targets (is this engine a Swarm manager?)", deployer.ErrUnsupported, k)
}
