package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nicholas-fedor/shoutrrr/pkg/router"
	"github.com/nicholas-fedor/shoutrrr/pkg/types"
)

// shoutrrrSink sends through one shoutrrr service. Shoutrrr's services take
// no context (several use http.DefaultClient without a timeout), so a send
// runs in its own goroutine and is abandoned after the timeout; while it
// has not returned, later messages to that service are skipped (busy)
// rather than piling up goroutines behind a dead endpoint.
type shoutrrrSink struct {
	label, scheme string
	svc           types.Service
	redact        *redactor
	busy          atomic.Bool
}

// newShoutrrrSink prepares the service of URL i. Errors name the position
// and the scheme only; the reason shoutrrr gives is redacted.
func newShoutrrrSink(i int, raw string, red *redactor) (*shoutrrrSink, error) {
	field := fmt.Sprintf("notify.urls[%d]", i)
	full, _, ok := strings.Cut(raw, "://")
	if !ok || full == "" || !validScheme(full) {
		return nil, fmt.Errorf("%s: not a service URL (scheme://…), like slack://… or smtp://…", field)
	}
	scheme, _, _ := strings.Cut(strings.ToLower(full), "+")
	var r router.ServiceRouter // zero value: no logger, so shoutrrr logs nothing (it would log URLs)
	svc, err := r.NewService(scheme)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): unknown service %q; see https://shoutrrr.nickfedor.com/ for the services and their URL formats", field, scheme, scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): not a valid URL (check for unescaped characters in the token or password)", field, scheme)
	}
	if !strings.EqualFold(u.Scheme, scheme) {
		custom, ok := svc.(types.CustomURLService)
		if !ok {
			return nil, fmt.Errorf("%s (%s): this service does not take a %q scheme; write %s://…", field, scheme, u.Scheme, scheme)
		}
		if u, err = custom.GetConfigURLFromCustom(u); err != nil {
			return nil, fmt.Errorf("%s (%s): %s", field, scheme, red.String(err.Error()))
		}
	}
	if err := svc.Initialize(u, nil); err != nil {
		return nil, fmt.Errorf("%s (%s): invalid settings: %s", field, scheme, red.String(err.Error()))
	}
	return &shoutrrrSink{label: fmt.Sprintf("%s#%d", scheme, i), scheme: scheme, svc: svc, redact: red}, nil
}

func validScheme(s string) bool {
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')
		if !ok {
			return false
		}
	}
	return len(s) <= 32
}

func (s *shoutrrrSink) name() string { return s.label }
func (s *shoutrrrSink) kind() string { return s.scheme }

func (s *shoutrrrSink) send(ctx context.Context, _ Event, title, msg string) error {
	if !s.busy.CompareAndSwap(false, true) {
		return errBusy
	}
	done := make(chan error, 1)
	go func() {
		defer s.busy.Store(false)
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("the %s service panicked", s.scheme)
			}
		}()
		params := types.Params{}
		params.SetTitle(title)
		done <- s.svc.Send(msg, &params)
	}()
	select {
	case err := <-done:
		if err != nil {
			return errors.New(s.redact.String(err.Error()))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no answer in time (%v); later messages to this service are skipped until it answers", ctx.Err())
	}
}

// webhookSink posts events as JSON to a URL of the user's.
type webhookSink struct {
	label   string
	url     string
	headers http.Header
	client  *http.Client
	redact  *redactor
}

// maxResponse is how much of a webhook's answer is read (and discarded).
const maxResponse = 64 << 10

func newWebhookSink(i int, w Webhook, timeout time.Duration, red *redactor) (*webhookSink, error) {
	field := fmt.Sprintf("notify.webhooks[%d]", i)
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%s.url: not an http(s) URL with a host", field)
	}
	h := http.Header{}
	for k, v := range w.Headers {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("%s.headers: %q is not a valid header name", field, k)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("%s.headers.%s: the value contains a line break or NUL", field, k)
		}
		h.Set(k, v)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	return &webhookSink{
		label:   fmt.Sprintf("webhook#%d", i),
		url:     w.URL,
		headers: h,
		redact:  red,
		client: &http.Client{
			Timeout:   timeout,
			Transport: transport,
			// A redirect would carry the headers (often credentials) to
			// wherever it points: not followed, reported as a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

func (s *webhookSink) name() string { return s.label }
func (s *webhookSink) kind() string { return "webhook" }

// webhookPayload is what a generic webhook receives.
type webhookPayload struct {
	Event
	Title   string `json:"title"`
	Message string `json:"message"`
	Source  string `json:"source"`
}

func (s *webhookSink) send(ctx context.Context, ev Event, title, msg string) error {
	body, err := json.Marshal(webhookPayload{Event: ev, Title: title, Message: msg, Source: "shipwatch"})
	if err != nil {
		return fmt.Errorf("encode the event: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("could not build the request")
	}
	for k, v := range s.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shipwatch")
	resp, err := s.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error quotes the URL
		}
		return errors.New(s.redact.String(err.Error()))
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if resp.StatusCode >= 300 && resp.StatusCode < 400 {
			return fmt.Errorf("answered %d (a redirect; redirects are not followed)", resp.StatusCode)
		}
		return fmt.Errorf("answered %d", resp.StatusCode)
	}
	return nil
}
