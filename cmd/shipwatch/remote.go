//go:build !agentonly

package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/shipwatch/shipwatch/config"
)

// remote talks to a running agent's API, so that CLI rollouts, rollbacks and
// approvals take the agent's per-target lock instead of racing it.
type remote struct {
	base  string
	token string
	http  *http.Client
}

// errNoAgent: no agent API is configured or none answers.
var errNoAgent = errors.New("no running agent")

// agentRemote returns a client for the configured agent when one answers.
func agentRemote(ctx context.Context, cfg *config.Config) (*remote, error) {
	base := cfg.API.URL
	if base == "" && cfg.API.Listen != "" {
		host, port, err := net.SplitHostPort(cfg.API.Listen)
		if err != nil {
			return nil, errNoAgent
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		scheme := "http"
		if cfg.API.TLSCert != "" {
			scheme = "https"
		}
		base = scheme + "://" + net.JoinHostPort(host, port)
	}
	if base == "" {
		return nil, errNoAgent
	}
	r := &remote{base: strings.TrimRight(base, "/"), token: cfg.API.Token.Value(), http: &http.Client{Timeout: 30 * time.Minute}}
	if strings.HasPrefix(base, "https://") && strings.Contains(base, "127.0.0.1") {
		// Loopback with the agent's own certificate: trust it for this call only.
		r.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} //nolint:gosec // loopback only
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(pctx, http.MethodGet, r.base+"/healthz", nil)
	resp, err := r.http.Do(req)
	if err != nil {
		return nil, errNoAgent
	}
	resp.Body.Close()
	return r, nil
}

// do sends a JSON request and decodes the JSON answer into out.
func (r *remote) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	u := r.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return fmt.Errorf("agent API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("agent API %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("agent: %s", e.Error)
		}
		return fmt.Errorf("agent API %s %s: %s", method, path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}
