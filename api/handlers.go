package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/state"
)

// Request bodies. Unknown fields are refused (decodeBody).
type checkRequest struct {
	Targets []string `json:"targets"`
}

type rollbackRequest struct {
	Target string `json:"target"`
	To     string `json:"to,omitempty"`
}

type approveRequest struct {
	Target    string `json:"target"`
	Candidate string `json:"candidate,omitempty"`
	// By labels who approves (the token is shared, so this is a label,
	// not an identity); the client address is added to it.
	By string `json:"by,omitempty"`
}

type clearedResponse struct {
	Cleared int `json:"cleared"`
}

type statusResponse struct {
	Status string `json:"status"`
}

// Limits on request values.
const (
	maxTargets       = 1000
	maxTargetLen     = 256
	maxRefLen        = 1024
	defaultHistory   = 50
	maxCallerNameLen = 64
)

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.backend.Ready(r.Context()); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, statusResponse{Status: "ok"})
}

func (s *Server) targets(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	v, err := s.backend.Targets(r.Context())
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "target", "limit")
	if !ok {
		return
	}
	target := q.Get("target")
	if !validTarget(w, "target", target, true) {
		return
	}
	limit := defaultHistory
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "limit must be a whole number (0 = every entry kept), got "+quote(l))
			return
		}
		limit = n
	}
	entries, err := s.backend.History(r.Context(), target, limit)
	if err != nil {
		s.backendError(w, err)
		return
	}
	if entries == nil {
		entries = []state.Entry{}
	}
	writeJSON(w, http.StatusOK, entries)
}

func (s *Server) check(w http.ResponseWriter, r *http.Request) {
	var req checkRequest
	if !noQuery(w, r) || !decodeBody(w, r, s.opts.MaxBody, &req, true) {
		return
	}
	if len(req.Targets) > maxTargets {
		writeError(w, http.StatusBadRequest, "targets: at most "+strconv.Itoa(maxTargets)+" per request; send none to check every target")
		return
	}
	for i, t := range req.Targets {
		if !validTarget(w, "targets["+strconv.Itoa(i)+"]", t, false) {
			return
		}
	}
	v, err := s.backend.Check(r.Context(), req.Targets)
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) rollout(w http.ResponseWriter, r *http.Request) {
	var req RolloutRequest
	if !noQuery(w, r) || !decodeBody(w, r, s.opts.MaxBody, &req, false) {
		return
	}
	if !validTarget(w, "target", req.Target, false) || !validRef(w, "to", req.To) {
		return
	}
	v, err := s.backend.Rollout(s.detached(r), req)
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	var req rollbackRequest
	if !noQuery(w, r) || !decodeBody(w, r, s.opts.MaxBody, &req, false) {
		return
	}
	if !validTarget(w, "target", req.Target, false) || !validRef(w, "to", req.To) {
		return
	}
	v, err := s.backend.Rollback(s.detached(r), req.Target, req.To)
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) approvals(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	list, err := s.backend.Approvals(r.Context())
	if err != nil {
		s.backendError(w, err)
		return
	}
	if list == nil {
		list = []state.Approval{}
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) approve(w http.ResponseWriter, r *http.Request) {
	var req approveRequest
	if !noQuery(w, r) || !decodeBody(w, r, s.opts.MaxBody, &req, false) {
		return
	}
	if !validTarget(w, "target", req.Target, false) {
		return
	}
	if req.Candidate != "" {
		if len(req.Candidate) > maxRefLen {
			writeError(w, http.StatusBadRequest, "candidate: longer than "+strconv.Itoa(maxRefLen)+" characters")
			return
		}
		if _, err := imageref.Parse(req.Candidate); err != nil {
			writeError(w, http.StatusBadRequest, "candidate: not an image reference; copy it from GET /v1/approvals (repo:tag@sha256:…)")
			return
		}
	}
	a, err := s.backend.Approve(r.Context(), req.Target, req.Candidate, caller(r, req.By))
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

func (s *Server) quarantine(w http.ResponseWriter, r *http.Request) {
	if !noQuery(w, r) {
		return
	}
	list, err := s.backend.Quarantine(r.Context())
	if err != nil {
		s.backendError(w, err)
		return
	}
	if list == nil {
		list = []state.Quarantined{}
	}
	writeJSON(w, http.StatusOK, list)
}

// clearQuarantine needs a target, or all=true: a bare DELETE must not wipe
// every quarantined digest by accident.
func (s *Server) clearQuarantine(w http.ResponseWriter, r *http.Request) {
	q, ok := query(w, r, "target", "digest", "all")
	if !ok {
		return
	}
	target, digest, all := q.Get("target"), q.Get("digest"), q.Get("all")
	if all != "" && all != "true" {
		writeError(w, http.StatusBadRequest, "all: only all=true is accepted")
		return
	}
	if target == "" && all != "true" {
		writeError(w, http.StatusBadRequest, "give target= (and optionally digest=), or all=true to clear every quarantined digest")
		return
	}
	if all == "true" && (target != "" || digest != "") {
		writeError(w, http.StatusBadRequest, "all=true clears everything; do not combine it with target or digest")
		return
	}
	if !validTarget(w, "target", target, true) {
		return
	}
	if digest != "" && !imageref.ValidDigest(digest) {
		writeError(w, http.StatusBadRequest, "digest: not a digest like sha256:<64 hex>; got "+quote(digest))
		return
	}
	n, err := s.backend.ClearQuarantine(r.Context(), target, digest)
	if err != nil {
		s.backendError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, clearedResponse{Cleared: n})
}

// detached is the ctx of a rollout or rollback: it keeps the request's
// values but not its cancellation, so a client that hangs up does not
// abandon a rollout halfway (the agent bounds it with its own deadlines).
func (s *Server) detached(r *http.Request) context.Context {
	return context.WithoutCancel(r.Context())
}

// caller names who approved: the "by" of the body or else the
// X-Shipwatch-User header (the token is shared, so this is a label, not an
// identity), and the client address. A label that is not a plain name is
// left out.
func caller(r *http.Request, by string) string {
	name := by
	if name == "" {
		name = r.Header.Get("X-Shipwatch-User")
	}
	ok := name != "" && len(name) <= maxCallerNameLen
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._@-", c)) {
			ok = false
			break
		}
	}
	if ok {
		return name + " via api from " + clientIP(r)
	}
	return "api from " + clientIP(r)
}

// validTarget checks a target ID from the request: printable, bounded.
func validTarget(w http.ResponseWriter, field, t string, optional bool) bool {
	switch {
	case t == "" && optional:
		return true
	case t == "":
		writeError(w, http.StatusBadRequest, field+": missing; give a target ID as listed by GET /v1/targets")
	case len(t) > maxTargetLen:
		writeError(w, http.StatusBadRequest, field+": longer than "+strconv.Itoa(maxTargetLen)+" characters")
	case !printable(t):
		writeError(w, http.StatusBadRequest, field+": contains control characters or spaces")
	default:
		return true
	}
	return false
}

// validRef checks the optional "to" of a rollout or rollback: a tag, a
// digest or a reference; the agent resolves it.
func validRef(w http.ResponseWriter, field, v string) bool {
	switch {
	case v == "":
		return true
	case len(v) > maxRefLen:
		writeError(w, http.StatusBadRequest, field+": longer than "+strconv.Itoa(maxRefLen)+" characters")
	case !printable(v):
		writeError(w, http.StatusBadRequest, field+": contains control characters or spaces")
	default:
		return true
	}
	return false
}

// printable accepts valid UTF-8 without spaces or control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if !unicode.IsGraphic(c) || unicode.IsSpace(c) {
			return false
		}
	}
	return true
}
