package helper

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/verify/verdict"
)

// Conn is a started helper: where requests go, where answers come from,
// and how to wait for it to exit or kill it.
type Conn struct {
	Requests  io.WriteCloser
	Responses io.ReadCloser
	// Wait blocks until the helper has exited and says how it ended.
	Wait func() error
	// Kill ends the helper at once.
	Kill func()
}

// Options configure a Client.
type Options struct {
	// Start starts a helper process (Command builds the usual one).
	Start func() (*Conn, error)
	// Idle is how long a helper with no call running stays up before it is
	// told to exit (default 15s): long enough to serve a whole pass, short
	// enough that the memory it takes is given back between passes.
	Idle time.Duration
	// Ready bounds the wait for a new helper's greeting (default 1m).
	Ready time.Duration
	// Lost is called when the helper dies while a rollout or rollback is in
	// flight: what the rollout did is unknown. It should not return (the
	// agent exits, and its restart reconciles the rollout from its
	// journal); if it does, the call returns a failed result.
	Lost func(error)
	// Version, when set, must be the helper's: an agent and a helper from
	// different builds do not talk.
	Version string
	Logger  zerolog.Logger
}

// Client is the agent's side: it starts a helper when a call needs one and
// lets it go when it has been idle for Options.Idle.
type Client struct {
	opts Options

	mu     sync.Mutex
	proc   *proc
	nextID uint64
	closed bool
}

// NewClient returns a Client; no helper starts until the first call.
func NewClient(opts Options) *Client {
	if opts.Idle <= 0 {
		opts.Idle = 15 * time.Second
	}
	if opts.Ready <= 0 {
		opts.Ready = time.Minute
	}
	return &Client{opts: opts}
}

// proc is one running helper.
type proc struct {
	conn    *Conn
	encMu   sync.Mutex
	enc     *json.Encoder
	calls   map[uint64]chan response // guarded by Client.mu
	running int                      // calls in flight, guarded by Client.mu
	calling sync.WaitGroup           // the calls in flight, for Close
	idle    *time.Timer              // guarded by Client.mu
	dead    chan struct{}            // closed when the response stream ends
	err     error                    // why it ended; set before dead is closed
}

// notStarted is a failure before a request reached a helper: nothing was
// changed.
type notStarted struct{ err error }

func (e notStarted) Error() string { return e.err.Error() }
func (e notStarted) Unwrap() error { return e.err }

// get returns a running helper with one more call counted on it, starting
// one if needed.
func (c *Client) get() (*proc, uint64, chan response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, 0, nil, notStarted{errors.New("the agent is stopping")}
	}
	if c.proc == nil {
		p, err := c.start()
		if err != nil {
			return nil, 0, nil, notStarted{err}
		}
		c.proc = p
	}
	p := c.proc
	if p.idle != nil {
		p.idle.Stop()
		p.idle = nil
	}
	c.nextID++
	ch := make(chan response, 16)
	p.calls[c.nextID] = ch
	p.running++
	p.calling.Add(1)
	return p, c.nextID, ch, nil
}

// start starts a helper and waits for its greeting. Called with c.mu held:
// calls wait for the one helper rather than starting several.
func (c *Client) start() (*proc, error) {
	began := time.Now()
	conn, err := c.opts.Start()
	if err != nil {
		return nil, err
	}
	p := &proc{conn: conn, enc: json.NewEncoder(conn.Requests), calls: map[uint64]chan response{}, dead: make(chan struct{})}
	sc := bufio.NewScanner(conn.Responses)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	greeting := make(chan error, 1)
	go func() {
		var h response
		switch {
		case !sc.Scan():
			greeting <- fmt.Errorf("the helper exited before it was ready (its log says why): %v", sc.Err())
			return
		case json.Unmarshal(sc.Bytes(), &h) != nil || h.Hello == nil:
			greeting <- fmt.Errorf("the helper's first line is not a greeting: %.200q", sc.Bytes())
			return
		case h.Hello.Err != "":
			greeting <- errors.New(h.Hello.Err)
			return
		case c.opts.Version != "" && h.Hello.Version != c.opts.Version:
			greeting <- fmt.Errorf("the helper is version %q, the agent %q: install shipwatch and shipwatch-agent from the same build", h.Hello.Version, c.opts.Version)
			return
		}
		greeting <- nil
		c.read(p, sc)
	}()
	t := time.NewTimer(c.opts.Ready)
	defer t.Stop()
	select {
	case err = <-greeting:
	case <-t.C:
		err = fmt.Errorf("the helper was not ready within %s", c.opts.Ready)
	}
	if err != nil {
		conn.Kill()
		_ = conn.Requests.Close()
		_ = conn.Wait()
		return nil, err
	}
	c.opts.Logger.Debug().Dur("took", time.Since(began)).Msg("helper process started")
	return p, nil
}

// read hands each answer to its call until the stream ends, then fails
// the calls still waiting.
func (c *Client) read(p *proc, sc *bufio.Scanner) {
	for sc.Scan() {
		var r response
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			p.err = fmt.Errorf("the helper sent a line that is not an answer: %w", err)
			p.conn.Kill()
			break
		}
		c.mu.Lock()
		ch := p.calls[r.ID]
		final := r.Step == nil
		if final {
			delete(p.calls, r.ID)
		}
		c.mu.Unlock()
		if ch != nil {
			ch <- r // buffered; a call reads its channel until its final answer
		}
	}
	werr := p.conn.Wait()
	if p.err == nil {
		p.err = fmt.Errorf("the helper process ended (%v)", werr)
		if werr == nil {
			p.err = errors.New("the helper process ended")
		}
	}
	c.mu.Lock()
	if c.proc == p {
		c.proc = nil
	}
	if p.idle != nil {
		p.idle.Stop()
	}
	c.mu.Unlock()
	close(p.dead)
}

// done counts a call as finished; the last one arms the idle timer.
func (c *Client) done(p *proc, id uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(p.calls, id)
	p.running--
	p.calling.Done()
	if p.running > 0 || c.proc != p {
		return
	}
	p.idle = time.AfterFunc(c.opts.Idle, func() {
		c.mu.Lock()
		if c.proc != p || p.running > 0 {
			c.mu.Unlock()
			return
		}
		c.proc = nil
		c.mu.Unlock()
		c.opts.Logger.Debug().Msg("helper process idle: letting it go")
		_ = p.conn.Requests.Close() // the helper exits at the end of its input
	})
}

func (p *proc) send(r request) error {
	p.encMu.Lock()
	defer p.encMu.Unlock()
	return p.enc.Encode(r)
}

// call sends req and waits for its final answer, passing steps to progress.
// When ctx ends the helper is asked to cancel the call; a verification
// returns at once (nothing to clean up), a rollout waits for the helper to
// finish or roll back, as the deployer would in this process.
func (c *Client) call(ctx context.Context, req request, progress deployer.Progress, waitOnCancel bool) (response, error) {
	p, id, ch, err := c.get()
	if err != nil {
		return response{}, err
	}
	defer c.done(p, id)
	req.ID = id
	if err := p.send(req); err != nil {
		// The request may be half written; the helper may have read it.
		<-p.dead
		return response{}, fmt.Errorf("send to the helper: %w (%v)", err, p.err)
	}
	// answer handles one answer: a step goes to progress and is
	// acknowledged; a final answer ends the call.
	answer := func(r response) (final bool, _ response, _ error) {
		if r.Step != nil {
			if progress != nil {
				progress(r.Step.decode())
			}
			_ = p.send(request{ID: id, Op: opAck}) // fails only if the helper is gone
			return false, response{}, nil
		}
		if r.Err != "" {
			return true, response{}, errors.New(r.Err)
		}
		return true, r, nil
	}
	cancelled := ctx.Done()
	for {
		select {
		case r := <-ch:
			if final, r, err := answer(r); final {
				return r, err
			}
		case <-cancelled:
			cancelled = nil
			_ = p.send(request{ID: id, Op: opCancel})
			if !waitOnCancel {
				return response{}, ctx.Err()
			}
		case <-p.dead:
			// Answers read before the stream ended are still in ch.
			for {
				select {
				case r := <-ch:
					if final, r, err := answer(r); final {
						return r, err
					}
				default:
					return response{}, p.err
				}
			}
		}
	}
}

// Start starts a helper now (if none runs) and lets it go when idle: a
// check at start-up that helpers can run with this configuration.
func (c *Client) Start(ctx context.Context) error {
	p, id, _, err := c.get()
	if err != nil {
		return err
	}
	c.done(p, id)
	return nil
}

// Close lets the running calls end, tells the helper to exit and waits for
// it; when ctx ends first the helper is killed.
func (c *Client) Close(ctx context.Context) {
	c.mu.Lock()
	c.closed = true
	p := c.proc
	c.proc = nil
	if p != nil && p.idle != nil {
		p.idle.Stop()
	}
	c.mu.Unlock()
	if p == nil {
		return
	}
	quiet := make(chan struct{})
	go func() { p.calling.Wait(); close(quiet) }()
	select {
	case <-quiet:
	case <-p.dead:
	case <-ctx.Done():
	}
	_ = p.conn.Requests.Close()
	select {
	case <-p.dead:
	case <-ctx.Done():
		p.conn.Kill()
		<-p.dead
	}
}

// Verify runs the verification in the helper. A helper that cannot be
// started or dies makes the verdict undecided: nothing runs that was not
// verified, and the next pass asks again.
func (c *Client) Verify(ctx context.Context, image imageref.Ref) verdict.Verdict {
	r, err := c.call(ctx, request{Op: opVerify, Image: &image}, nil, false)
	if err == nil && r.Verdict == nil {
		err = errors.New("the helper answered a verification without a verdict")
	}
	if err != nil {
		return verdict.Verdict{Image: image.String(), Decision: verdict.Undecided,
			Reasons: []verdict.Reason{{Rule: verdict.RulePolicy, Message: "could not run the verifier: " + err.Error()}}}
	}
	return *r.Verdict
}

// Deployer returns the deployer of kind k that runs in the helper.
func (c *Client) Deployer(k deployer.Kind) deployer.Deployer { return remoteDeployer{c: c, kind: k} }

type remoteDeployer struct {
	c    *Client
	kind deployer.Kind
}

func (d remoteDeployer) Deploy(ctx context.Context, plan deployer.Plan, progress deployer.Progress) deployer.Result {
	r, err := d.c.call(ctx, request{Op: opDeploy, Plan: &plan}, progress, true)
	return d.c.result(r, err, plan.Target.Digest, plan.To.Digest)
}

func (d remoteDeployer) Rollback(ctx context.Context, t deployer.Target, to string, progress deployer.Progress) deployer.Result {
	r, err := d.c.call(ctx, request{Op: opRollback, Target: &t, To: to}, progress, true)
	return d.c.result(r, err, t.Digest, to)
}

func (c *Client) result(r response, err error, from, to string) deployer.Result {
	if err == nil && r.Result == nil {
		err = errors.New("the helper answered a rollout without a result")
	}
	if err == nil {
		return r.Result.decode()
	}
	if !errors.As(err, new(notStarted)) {
		// The request reached a helper that then died or broke the
		// protocol: the rollout may be half done.
		err = fmt.Errorf("lost the helper during the rollout: %w", err)
		if c.opts.Lost != nil {
			c.opts.Lost(err)
		}
		return deployer.Result{Outcome: deployer.Failed, From: from, To: to, Cause: err, ManualAction: true}
	}
	return deployer.Result{Outcome: deployer.Failed, From: from, To: to, Cause: fmt.Errorf("could not run the deployer: %w", err)}
}
