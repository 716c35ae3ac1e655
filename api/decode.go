package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// decodeBody decodes the JSON body of r into v strictly: bounded size, one
// JSON object, no unknown fields, Content-Type application/json (which also
// keeps browsers from posting to a token-less loopback API across origins:
// such a request needs a CORS preflight, which this API never grants). An
// empty body is accepted only when emptyOK. It answers the error itself.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any, emptyOK bool) bool {
	body := http.MaxBytesReader(w, r.Body, limit)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body is larger than "+strconv.FormatInt(limit, 10)+" bytes")
			return false
		}
		writeError(w, http.StatusBadRequest, "could not read the request body")
		return false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if emptyOK {
			return true
		}
		writeError(w, http.StatusBadRequest, "request body is empty; send a JSON object with "+fieldList(v))
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "send the body as Content-Type: application/json")
		return false
	}
	if msg := decodeStrict(data, v); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return false
	}
	return true
}

// decodeStrict decodes exactly one JSON object with only the fields of v
// and returns "" or a message for the client.
func decodeStrict(data []byte, v any) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err, v)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "request body must hold one JSON object and nothing after it"
	}
	if string(bytes.TrimSpace(data)) == "null" {
		return "request body must be a JSON object with " + fieldList(v)
	}
	return ""
}

// describeJSONError turns a decoding error into a message that says what
// to fix, quoting at most a bounded piece of the input.
func describeJSONError(err error, v any) string {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return "request body is not valid JSON (at byte " + strconv.FormatInt(syntax.Offset, 10) + ")"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "request body is truncated JSON"
	case errors.As(err, &typ):
		if typ.Field == "" {
			return "request body must be a JSON object with " + fieldList(v)
		}
		return "field " + quote(typ.Field) + ": got a JSON " + typ.Value + ", want " + jsonKind(typ.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return "unknown field " + quote(name) + " in request body; allowed: " + fieldList(v)
	}
	return "request body could not be decoded; send a JSON object with " + fieldList(v)
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array of " + strings.TrimPrefix(jsonKind(t.Elem()), "a ") + "s"
	case reflect.Int, reflect.Int64:
		return "a number"
	}
	return "of type " + t.String()
}

// fieldList lists the JSON fields of the struct v points to.
func fieldList(v any) string {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var names []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("json")
		name, _, _ := strings.Cut(tag, ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return strings.Join(names, ", ")
}

// noQuery refuses query parameters on endpoints that take none.
func noQuery(w http.ResponseWriter, r *http.Request) bool {
	_, ok := query(w, r)
	return ok
}

// query parses the query string and refuses parameters not in allowed and
// repeated parameters, answering the error itself.
func query(w http.ResponseWriter, r *http.Request, allowed ...string) (url.Values, bool) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "the query string is malformed")
		return nil, false
	}
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !contains(allowed, k) {
			msg := "unknown query parameter " + quote(k)
			if len(allowed) == 0 {
				msg += "; this endpoint takes none"
			} else {
				msg += "; allowed: " + strings.Join(allowed, ", ")
			}
			writeError(w, http.StatusBadRequest, msg)
			return nil, false
		}
		if len(q[k]) > 1 {
			writeError(w, http.StatusBadRequest, "query parameter "+quote(k)+" is repeated")
			return nil, false
		}
	}
	return q, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
