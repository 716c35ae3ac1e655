package watcher

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shipwatch/shipwatch/imageref"
)

// Change says what kind of update a Result proposes.
type Change int

// The changes a check can find.
const (
	// ChangeNone: nothing to deploy (up to date, frozen, nothing allowed, or failed).
	ChangeNone Change = iota
	// ChangeDigest: the same tag points at a new digest.
	ChangeDigest
	// ChangeTag: a newer tag is allowed by the policy.
	ChangeTag
)

func (c Change) String() string {
	switch c {
	case ChangeNone:
		return "none"
	case ChangeDigest:
		return "digest"
	case ChangeTag:
		return "tag"
	}
	return fmt.Sprintf("Change(%d)", int(c))
}

// Request is one target to check.
type Request struct {
	Key     string       // caller's id (target ID), echoed in Result
	Image   imageref.Ref // as deployed, with tag; a digest in it is ignored
	Running string       // digest that runs now ("" unknown)
	Policy  *Policy
}

// Result is the answer for one Request.
type Result struct {
	Key string
	// Current is Image pinned to Running (just Image when Running is unknown).
	Current imageref.Ref
	// Candidate is repo:tag@sha256:… to deploy; zero when there is nothing to do.
	Candidate imageref.Ref
	Change    Change
	// Reason says why or why not, for humans.
	Reason string
	// Err is set when the check failed (registry error, policy that does
	// not fit the tag): the outcome is "failed to check", never an update.
	Err error
}

// HasUpdate reports whether r proposes a candidate.
func (r Result) HasUpdate() bool { return r.Err == nil && r.Change != ChangeNone }

// Check checks every request and returns one Result per request, in the
// same order. Within one call each (repository, tag) is resolved with one
// HEAD and each repository's tags are listed once, however many requests
// share them; manifests are fetched (GET) only to validate a candidate or
// to look inside an index whose digest differs from the running one, and
// a fetched manifest is never fetched again (content under a digest never
// changes). A registry failure fails only the requests that need it.
func (w *Watcher) Check(ctx context.Context, reqs []Request) []Result {
	p := &pass{w: w, heads: map[string]*memo[manifestHead]{}, lists: map[string]*memo[*tagList]{}, gets: map[string]*memo[manifestInfo]{}}
	// Tag-following requests first: each is a chain (tag pages, then a
	// HEAD), so starting them early keeps the chains off the pass's tail.
	order := make([]int, 0, len(reqs))
	for i, r := range reqs {
		if r.Policy != nil && r.Policy.FollowsTags() {
			order = append(order, i)
		}
	}
	for i, r := range reqs {
		if r.Policy == nil || !r.Policy.FollowsTags() {
			order = append(order, i)
		}
	}
	w.announce(reqs, order)
	out := make([]Result, len(reqs))
	var wg sync.WaitGroup
	for _, queue := range byDomain(reqs, order) {
		// A few workers per registry instead of a goroutine per request:
		// no more requests than the concurrency bound are in flight anyway,
		// and a long-lived worker grows its stack once per pass, not once
		// per request. Twice the bound keeps the bound busy while some
		// workers decode or wait for a shared result; one registry per
		// queue keeps a slow registry from holding the others' workers.
		var next atomic.Int64
		for range min(len(queue), 2*cap(w.global)) {
			wg.Go(func() {
				for {
					k := int(next.Add(1)) - 1
					if k >= len(queue) {
						return
					}
					i := queue[k]
					out[i] = p.check(ctx, reqs[i])
				}
			})
		}
	}
	wg.Wait()
	return out
}

// byDomain splits order into one queue per registry domain, each in the
// order given.
func byDomain(reqs []Request, order []int) [][]int {
	var queues [][]int
	index := map[string]int{}
	for _, i := range order {
		d := reqs[i].Image.Domain
		q, ok := index[d]
		if !ok {
			q = len(queues)
			index[d] = q
			queues = append(queues, nil)
		}
		queues[q] = append(queues[q], i)
	}
	return queues
}

// announce tells the token cache of every endpoint the requests read from
// which repositories the pass is about to read, in the order it starts
// them, so that one token request can renew many of them.
func (w *Watcher) announce(reqs []Request, order []int) {
	byDomain := map[string][]string{}
	seen := map[string]bool{}
	for _, i := range order {
		img := reqs[i].Image
		scope := pullScope(img.Path)
		if !seen[img.Domain+" "+scope] {
			seen[img.Domain+" "+scope] = true
			byDomain[img.Domain] = append(byDomain[img.Domain], scope)
		}
	}
	for domain, scopes := range byDomain {
		for _, e := range w.readEndpoints(domain) {
			e.auth.expect(scopes)
		}
	}
}

// memo is one deduplicated registry operation of a pass.
type memo[T any] struct {
	once sync.Once
	val  T
	err  error
}

func (m *memo[T]) do(f func() (T, error)) (T, error) {
	m.once.Do(func() { m.val, m.err = f() })
	return m.val, m.err
}

// pass is the state of one Check call: the deduplicated HEADs, tag lists
// and GETs.
type pass struct {
	w     *Watcher
	mu    sync.Mutex
	heads map[string]*memo[manifestHead]
	lists map[string]*memo[*tagList]
	gets  map[string]*memo[manifestInfo]
}

func memoFor[T any](mu *sync.Mutex, m map[string]*memo[T], key string) *memo[T] {
	mu.Lock()
	defer mu.Unlock()
	e, ok := m[key]
	if !ok {
		e = &memo[T]{}
		m[key] = e
	}
	return e
}

func (p *pass) head(ctx context.Context, ref imageref.Ref, tag string) (manifestHead, error) {
	return memoFor(&p.mu, p.heads, ref.Repo()+":"+tag).do(func() (manifestHead, error) { return p.w.head(ctx, ref, tag) })
}

func (p *pass) tags(ctx context.Context, ref imageref.Ref) (*tagList, error) {
	return memoFor(&p.mu, p.lists, ref.Repo()).do(func() (*tagList, error) { return p.w.tags(ctx, ref) })
}

func (p *pass) manifest(ctx context.Context, ref imageref.Ref, d string) (manifestInfo, error) {
	return memoFor(&p.mu, p.gets, d).do(func() (manifestInfo, error) { return p.w.manifest(ctx, ref, d) })
}

// selectTag applies pol to ref's running tag and, for a tag-following
// policy, to its repository's tags. A selection is kept between checks
// with the digest of the tag list it came from: an unchanged list (the
// usual case) is then neither decoded nor selected from again.
func (p *pass) selectTag(ctx context.Context, pol *Policy, ref imageref.Ref) (Selection, error) {
	if !pol.FollowsTags() {
		sel, err := pol.Select(ref.Tag, nil)
		if err != nil {
			return sel, fmt.Errorf("%s: %w", ref, err)
		}
		return sel, nil
	}
	list, err := p.tags(ctx, ref)
	if err != nil {
		return Selection{}, err
	}
	key := selectionKey{repo: ref.Repo(), running: ref.Tag, policy: pol}
	if sel, ok := p.w.selected.get(key, list.sum); ok {
		return sel, nil
	}
	tags, err := list.decode()
	if err != nil {
		return Selection{}, err
	}
	sel, err := pol.Select(ref.Tag, tags)
	if err != nil {
		return sel, fmt.Errorf("%s: %w", ref, err)
	}
	p.w.selected.put(key, list.sum, sel)
	return sel, nil
}

// check decides one request. The result starts as a failure and becomes
// an answer only on the paths that reach one.
func (p *pass) check(ctx context.Context, req Request) Result {
	res := Result{Key: req.Key, Current: req.Image.Tagged()}
	fail := func(err error) Result {
		res.Change, res.Candidate, res.Err = ChangeNone, imageref.Ref{}, err
		res.Reason = "failed to check: " + err.Error()
		return res
	}
	if req.Running != "" {
		if !imageref.ValidDigest(req.Running) {
			return fail(fmt.Errorf("running digest %q of %s is not a digest; discovery should give sha256:…", req.Running, req.Image.Tagged()))
		}
		res.Current = res.Current.WithDigest(req.Running)
	}
	ref := req.Image.Tagged()
	switch {
	case req.Policy == nil:
		return fail(fmt.Errorf("%s: no policy; compile one with CompilePolicy", ref))
	case ref.Domain == "" || ref.Path == "":
		return fail(fmt.Errorf("%q: not a full image reference; parse it with imageref.Parse", ref))
	case ref.Tag == "":
		return fail(fmt.Errorf("%s is pinned by digest only; shipwatch follows tags, so deploy it by tag", ref))
	}
	pol := req.Policy
	if pol.Frozen() {
		res.Reason = "frozen by policy"
		return res
	}
	if err := pol.CheckRunning(ref.Tag); err != nil {
		return fail(fmt.Errorf("%s: %w", ref, err))
	}
	sel, err := p.selectTag(ctx, pol, ref)
	if err != nil {
		return fail(err)
	}
	if sel.Tag == "" {
		res.Reason = sel.Reason
		return res
	}
	h, err := p.head(ctx, ref, sel.Tag)
	if err != nil {
		return fail(err)
	}
	cand := ref.WithTag(sel.Tag).WithDigest(h.digest)
	change := ChangeTag
	why := "" // the semver reason in front of a digest verdict
	if pol.Mode() == ModeSemver {
		why = sel.Reason + "; "
	}
	if !sel.Newer {
		change = ChangeDigest
		switch {
		case req.Running == "":
			res.Reason = fmt.Sprintf("%stag %s is at %s, but the running digest is unknown (locally built image?), so shipwatch cannot tell whether it moved", why, sel.Tag, shortDigest(h.digest))
			return res
		case h.digest == req.Running:
			res.Reason = fmt.Sprintf("%stag %s still at %s", why, sel.Tag, shortDigest(h.digest))
			return res
		}
	}
	// A candidate: validate it (one GET per new digest, then cached), and
	// look inside an index for the running platform manifest.
	m, err := p.manifest(ctx, ref, h.digest)
	if err != nil {
		return fail(err)
	}
	if isIndex(m.mediaType) {
		if c, ok := m.child(req.Running); ok && !sel.Newer {
			plat := "a platform"
			if c.Platform != nil {
				plat = "the " + c.Platform.String()
			}
			res.Reason = fmt.Sprintf("%stag %s moved to index %s, which still holds %s image %s that runs (unchanged)",
				why, sel.Tag, shortDigest(h.digest), plat, shortDigest(req.Running))
			return res
		}
		if !m.hasPlatform(p.w.platform) {
			return fail(&Error{Registry: ref.Domain, Subject: cand.String(), Kind: ErrNoPlatform,
				Detail: "the index has no " + p.w.platform.String() + " image",
				Hint:   "the image was not built for this platform; wait for a build or pin the policy"})
		}
	}
	res.Candidate, res.Change = cand, change
	if change == ChangeDigest {
		res.Reason = fmt.Sprintf("%stag %s moved to %s", why, sel.Tag, shortDigest(h.digest))
	} else {
		res.Reason = sel.Reason
	}
	return res
}
