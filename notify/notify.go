// Package notify tells people what shipwatch did — updates, rollbacks,
// blocked images, failures, approvals waiting — through chat and e-mail
// services (shoutrrr URLs) and generic JSON webhooks, in the background, so
// that a slow or broken notification service never holds up a rollout.
package notify

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	"github.com/rs/zerolog"

	"github.com/shipwatch/shipwatch/metrics"
)

// Event kinds.
const (
	KindUpdated        = "updated"
	KindRolledBack     = "rolled-back"
	KindBlocked        = "blocked"
	KindFailed         = "failed"
	KindApprovalNeeded = "approval-needed"
)

// Kinds lists every event kind.
var Kinds = []string{KindUpdated, KindRolledBack, KindBlocked, KindFailed, KindApprovalNeeded}

// Event is one thing worth telling people.
type Event struct {
	Kind     string    `json:"kind"` // one of Kinds
	Target   string    `json:"target"`
	Image    string    `json:"image,omitempty"` // repo:tag
	From     string    `json:"from,omitempty"`  // digest before
	To       string    `json:"to,omitempty"`    // digest tried or deployed
	Reason   string    `json:"reason,omitempty"`
	Signer   string    `json:"signer,omitempty"`
	Scan     string    `json:"scan,omitempty"`
	Time     time.Time `json:"time"`
	Hostname string    `json:"hostname,omitempty"` // set from Options.Hostname
}

// Webhook is a generic JSON webhook. The URL and the header values are
// secrets: they are never logged or put in errors.
type Webhook struct {
	URL     string
	Headers map[string]string
}

// Format keeps %v of a Webhook from printing its URL or headers.
func (w Webhook) Format(f fmt.State, _ rune) { fmt.Fprint(f, "notify.Webhook{[redacted]}") }

// Options configure a Notifier.
type Options struct {
	// URLs are shoutrrr service URLs (slack://…, smtp://…, discord://…,
	// generic+https://…). They hold tokens: never logged or printed.
	URLs []string
	// Webhooks receive every event as JSON (see docs/notifications.md).
	Webhooks []Webhook
	// Template is a Go text/template for the message text; DefaultTemplate
	// when empty.
	Template string
	// Events limits the kinds sent; every kind when empty.
	Events []string
	// Timeout bounds one delivery to one service (default 10s).
	Timeout time.Duration
	// QueueSize bounds the events waiting to be sent (default 100); when
	// it is full, new events are dropped with a warning and counted.
	QueueSize int
	// Hostname is added to every event (which agent is talking).
	Hostname string
	Logger   zerolog.Logger
	// Metrics counts notifications by service kind and result; may be nil.
	Metrics *metrics.Metrics
	// Dedup reports whether a key is new and records it; the agent passes
	// state.Store.FirstNotice so that a blocked digest is notified once,
	// across restarts. When nil, a bounded in-memory set is used.
	Dedup func(key string) (first bool, err error)
}

// Format keeps %v of Options from printing URLs, webhooks or headers.
func (o Options) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "notify.Options{URLs: %d [redacted], Webhooks: %d [redacted], Events: %v}", len(o.URLs), len(o.Webhooks), o.Events)
}

// Defaults of Options.
const (
	DefaultTimeout   = 10 * time.Second
	DefaultQueueSize = 100
)

// DefaultTemplate is the message text unless Options.Template is set. The
// fields are those of Event; short shortens a digest to 12 hex digits.
const DefaultTemplate = `shipwatch{{with .Hostname}} on {{.}}{{end}}: {{.Target}} {{.Kind}}` +
	`{{with .Image}} ({{.}}){{end}}` +
	`{{if .From}} from {{short .From}}{{end}}{{if .To}} to {{short .To}}{{end}}` +
	`{{with .Reason}}: {{.}}{{end}}` +
	`{{with .Signer}}; signed by {{.}}{{end}}{{with .Scan}}; scan: {{.}}{{end}}`

// Notifier sends events in the background. A nil *Notifier does nothing.
type Notifier struct {
	sinks    []sink
	tmpl     *template.Template
	kinds    map[string]bool
	dedup    func(string) (bool, error)
	timeout  time.Duration
	hostname string
	log      zerolog.Logger
	metrics  *metrics.Metrics

	mu      sync.RWMutex // guards closed and sends on queue
	closed  bool
	queue   chan Event
	done    chan struct{} // closed when the worker has returned
	abort   chan struct{} // closed when Close gives up waiting
	aborted sync.Once
	dropped atomic.Int64
}

// sink is one destination.
type sink interface {
	// name is the kind and position, like "slack#0" or "webhook#1": safe to log.
	name() string
	// kind is the service kind for metrics: "slack", "webhook".
	kind() string
	send(ctx context.Context, ev Event, title, msg string) error
}

// errBusy: the previous message to a service has not returned yet.
var errBusy = errors.New("the previous message to this service has not returned yet; skipped")

// New checks the options, prepares every service and starts the sender.
// An invalid URL is reported by its position and scheme, never its text.
func New(opts Options) (*Notifier, error) {
	n := &Notifier{
		timeout:  opts.Timeout,
		hostname: opts.Hostname,
		log:      opts.Logger,
		metrics:  opts.Metrics,
		dedup:    opts.Dedup,
		kinds:    map[string]bool{},
	}
	if n.timeout <= 0 {
		n.timeout = DefaultTimeout
	}
	size := opts.QueueSize
	if size <= 0 {
		size = DefaultQueueSize
	}
	var errs []error
	for i, e := range opts.Events {
		if !contains(Kinds, e) {
			errs = append(errs, fmt.Errorf("notify.events[%d]: %q is not an event; use %s", i, e, strings.Join(Kinds, ", ")))
		}
		n.kinds[e] = true
	}
	if len(opts.Events) == 0 {
		for _, k := range Kinds {
			n.kinds[k] = true
		}
	}
	red := newRedactor(opts)
	for i, raw := range opts.URLs {
		s, err := newShoutrrrSink(i, raw, red)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.sinks = append(n.sinks, s)
	}
	for i, w := range opts.Webhooks {
		s, err := newWebhookSink(i, w, n.timeout, red)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n.sinks = append(n.sinks, s)
	}
	tmpl, err := parseTemplate(opts.Template)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	n.tmpl = tmpl
	if n.dedup == nil {
		n.dedup = newMemoryDedup(10000)
	}
	n.queue = make(chan Event, size)
	n.done = make(chan struct{})
	n.abort = make(chan struct{})
	go n.run()
	return n, nil
}

// Notify queues ev and returns at once. When the queue is full the event
// is dropped, counted and logged: a rollout never waits for a notification.
func (n *Notifier) Notify(ev Event) {
	if n == nil || !n.kinds[ev.Kind] {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	if ev.Hostname == "" {
		ev.Hostname = n.hostname
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		n.drop(ev, "the notifier is closed")
		return
	}
	select {
	case n.queue <- ev:
	default:
		n.drop(ev, "the queue is full")
	}
}

func (n *Notifier) drop(ev Event, why string) {
	total := n.dropped.Add(1)
	n.metrics.Notification("all", metrics.NotificationDropped)
	n.log.Warn().Str("kind", ev.Kind).Str("target", ev.Target).Str("why", why).
		Int64("dropped_total", total).Msg("notify: notification dropped")
}

// Dropped is how many events were dropped because the queue was full or
// the notifier closed.
func (n *Notifier) Dropped() int64 {
	if n == nil {
		return 0
	}
	return n.dropped.Load()
}

// Close stops accepting events and sends those queued until ctx ends; then
// it gives up on the rest and says how many were not sent.
func (n *Notifier) Close(ctx context.Context) error {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.queue)
	}
	n.mu.Unlock()
	select {
	case <-n.done:
		return nil
	case <-ctx.Done():
	}
	left := len(n.queue)
	n.aborted.Do(func() { close(n.abort) })
	<-n.done // deliveries in flight end at once (their ctx is cancelled)
	return fmt.Errorf("notify: %d queued notifications were not sent before the deadline: %w", left, ctx.Err())
}

// run is the sender: one event at a time, every service of an event at once.
func (n *Notifier) run() {
	defer close(n.done)
	for ev := range n.queue {
		select {
		case <-n.abort:
			n.metrics.Notification("all", metrics.NotificationDropped)
			continue
		default:
		}
		n.deliver(ev)
	}
}

// deliver sends ev to every service, each bounded by the timeout.
func (n *Notifier) deliver(ev Event) {
	if ev.Kind == KindBlocked || ev.Kind == KindApprovalNeeded {
		first, err := n.dedup(dedupKey(ev))
		switch {
		case err != nil:
			n.log.Warn().Err(err).Str("kind", ev.Kind).Str("target", ev.Target).
				Msg("notify: could not check whether this was already notified; sending it")
		case !first:
			n.metrics.Notification("all", metrics.NotificationRepeat)
			n.log.Debug().Str("kind", ev.Kind).Str("target", ev.Target).Str("digest", ev.To).
				Msg("notify: already notified; not repeated")
			return
		}
	}
	if len(n.sinks) == 0 {
		return
	}
	msg := n.render(ev)
	title := "shipwatch: " + ev.Target + " " + ev.Kind

	ctx, cancel := context.WithTimeout(context.Background(), n.timeout)
	defer cancel()
	go func() {
		select {
		case <-n.abort:
			cancel()
		case <-ctx.Done():
		}
	}()
	var wg sync.WaitGroup
	for _, s := range n.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.send(ctx, ev, title, msg)
			switch {
			case errors.Is(err, errBusy):
				n.metrics.Notification(s.kind(), metrics.NotificationBusy)
				n.log.Warn().Str("service", s.name()).Str("kind", ev.Kind).Str("target", ev.Target).
					Msg("notify: service still busy with an earlier message; skipped")
			case err != nil:
				n.metrics.Notification(s.kind(), metrics.NotificationFailed)
				n.log.Warn().Str("service", s.name()).Str("kind", ev.Kind).Str("target", ev.Target).
					Str("error", err.Error()).Msg("notify: notification failed")
			default:
				n.metrics.Notification(s.kind(), metrics.NotificationSent)
				n.log.Debug().Str("service", s.name()).Str("kind", ev.Kind).Str("target", ev.Target).
					Msg("notify: notification sent")
			}
		}()
	}
	wg.Wait()
}

// dedupKey identifies a blocked digest (or a candidate awaiting approval)
// of a target. The "notify/" prefix keeps these keys apart from others the
// agent records in the same store.
func dedupKey(ev Event) string {
	what := ev.To
	if what == "" {
		what = ev.Image
	}
	return "notify/" + ev.Kind + "/" + ev.Target + "/" + what
}

// newMemoryDedup is the in-process dedup used without a state store: it
// remembers up to max keys, forgetting the oldest first.
func newMemoryDedup(max int) func(string) (bool, error) {
	var mu sync.Mutex
	seen := map[string]bool{}
	var order []string
	return func(key string) (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if seen[key] {
			return false, nil
		}
		if len(order) == max {
			delete(seen, order[0])
			order = order[1:]
		}
		seen[key] = true
		order = append(order, key)
		return true, nil
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
