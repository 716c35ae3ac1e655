package notify

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
	"time"
	"unicode/utf8"
)

// maxMessage bounds a rendered message (chat services cut long ones anyway).
const maxMessage = 4000

var templateFuncs = template.FuncMap{
	// short turns "sha256:0123456789abcdef…" into "0123456789ab".
	"short": func(d string) string {
		if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
			return hex[:12]
		}
		return d
	},
	"upper": strings.ToUpper,
}

// sampleEvent checks a template at start-up, with every field set.
var sampleEvent = Event{
	Kind: KindBlocked, Target: "compose:shop/web", Image: "ghcr.io/acme/web:1.4",
	From: "sha256:" + strings.Repeat("a", 64), To: "sha256:" + strings.Repeat("b", 64),
	Reason: "no signature by a trusted authority", Signer: "ci@acme.example", Scan: "0 critical, 2 high",
	Time: time.Unix(1767225600, 0).UTC(), Hostname: "docker-01",
}

// parseTemplate compiles the message template and runs it once on a sample
// event, so that a template naming a field that does not exist fails at
// start-up rather than at the first rollout.
func parseTemplate(text string) (*template.Template, error) {
	if text == "" {
		text = DefaultTemplate
	}
	t, err := template.New("message").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("notify.template: %w", err)
	}
	if err := t.Execute(&bytes.Buffer{}, sampleEvent); err != nil {
		return nil, fmt.Errorf("notify.template: %w (fields: Kind, Target, Image, From, To, Reason, Signer, Scan, Time, Hostname)", err)
	}
	return t, nil
}

// render is the message text of ev; a template that fails on this event
// (it ran on the sample at start-up) falls back to the default one.
func (n *Notifier) render(ev Event) string {
	var buf bytes.Buffer
	if err := n.tmpl.Execute(&buf, ev); err != nil {
		buf.Reset()
		def, _ := parseTemplate("")
		_ = def.Execute(&buf, ev)
	}
	msg := buf.String()
	if len(msg) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "…"
	}
	return msg
}
