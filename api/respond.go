package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

const redacted = "[redacted]"

// errorBody is every error the API answers.
type errorBody struct {
	Error string `json:"error"`
}

// writeJSON encodes v before writing anything, so that an encoding failure
// is still a clean 500.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "the agent's answer could not be encoded as JSON")
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// writeError answers {"error": msg}. Callers pass constant text, bounded
// quotes of input, or backend errors; whatever they pass goes through the
// server's redactor on its way out (every response writer of the server is
// a *statusWriter), so not even input that happens to hold the token is
// echoed.
func writeError(w http.ResponseWriter, code int, msg string) {
	if sw, ok := w.(*statusWriter); ok && sw.redact != nil {
		msg = sw.redact.String(msg)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(errorBody{Error: msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// backendError answers the error of a Backend call with the status its
// sentinel asks for, its text redacted.
func (s *Server) backendError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled):
		code = http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = http.StatusGatewayTimeout
	}
	writeError(w, code, err.Error())
}

// truncate bounds a piece of input echoed in an error.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// quote quotes a piece of input for an error message, bounded.
func quote(s string) string { return strconv.Quote(truncate(s, 64)) }

// redactor removes secrets from text that leaves the process: the API's own
// token and webhook secret, and the usual shapes of credentials (URL user
// info, bearer tokens, token=/password= parameters), in case a backend error
// carries a registry or notification URL.
type redactor struct {
	secrets []string
}

var credentialPatterns = []*regexp.Regexp{
	regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://)[^/\s@"']+@`),
	regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`),
	regexp.MustCompile(`(?i)\b((?:access_)?token|password|passwd|secret|api_?key|signature|sig)=[^&\s"']+`),
}

var credentialReplacements = []string{"${1}" + redacted + "@", "${1} " + redacted, "${1}=" + redacted}

func newRedactor(secrets ...string) *redactor {
	r := &redactor{}
	for _, s := range secrets {
		if s != "" {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

// String returns s without secrets.
func (r *redactor) String(s string) string {
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	for i, re := range credentialPatterns {
		s = re.ReplaceAllString(s, credentialReplacements[i])
	}
	return s
}
