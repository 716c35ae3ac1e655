package compose

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	composesdk "github.com/docker/compose/v5/pkg/compose"
	"go.yaml.in/yaml/v3"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/internal/atomicfile"
)

// backupSuffix names the copy of a file kept while a rollout that rewrote
// it is in flight; it is removed once the rollout succeeded or was undone.
const backupSuffix = ".shipwatch-backup"

// fileEdit is one in-place change of one file: the bytes of before at
// [start, end) become text. Everything else (comments, order, formatting)
// stays byte for byte.
type fileEdit struct {
	file       string
	before     []byte
	start, end int
	text       string
	line       int
}

func (e fileEdit) after() []byte {
	var b bytes.Buffer
	b.Grow(len(e.before) - (e.end - e.start) + len(e.text))
	b.Write(e.before[:e.start])
	b.WriteString(e.text)
	b.Write(e.before[e.end:])
	return b.Bytes()
}

func (e fileEdit) String() string {
	return fmt.Sprintf("%s:%d: %q → %q", e.file, e.line, string(e.before[e.start:e.end]), e.text)
}

// rewrittenRef returns the image reference as written (current, expanded,
// e.g. "registry:5000/app:1.4") with its tag replaced by tag, keeping the
// user's spelling of the repository. A reference that pins a digest in the
// file gets the new digest too.
func rewrittenRef(current, tag, digest string) string {
	base, pinned, hasDigest := strings.Cut(current, "@")
	name, oldTag := base, ""
	if i := strings.LastIndexByte(base, ':'); i > strings.LastIndexByte(base, '/') {
		name, oldTag = base[:i], base[i+1:]
	}
	if oldTag == tag || (oldTag == "" && tag == "latest") {
		if !hasDigest || pinned == digest {
			return current
		}
		return base + "@" + digest
	}
	s := name + ":" + tag
	if hasDigest {
		s += "@" + digest
	}
	return s
}

// imageEditInput is what planImageEdit needs to know about the project.
type imageEditInput struct {
	service    string
	files      []string // compose files, absolute
	envFiles   []string // env files Compose reads, absolute, in order
	workingDir string
	env        map[string]string // the project's interpolation environment
	current    string            // the service's image, interpolated
	want       string            // what it must read after the edit
}

// planImageEdit finds the one place to edit so that the service's image
// reads want: the image: value in a compose file, the default of the
// variable it is interpolated from, or that variable in an env file.
// Anything else is refused with ErrUnsupported, saying why.
func planImageEdit(in imageEditInput) (fileEdit, error) {
	loc, err := locateImage(in.files, in.workingDir, in.service)
	if err != nil {
		return fileEdit{}, err
	}
	where := fmt.Sprintf("%s:%d", loc.file, loc.line)
	toks, err := parseTemplate(loc.raw())
	if err != nil {
		return fileEdit{}, fmt.Errorf("%w: image at %s: %v", deployer.ErrUnsupported, where, err)
	}
	type piece struct {
		tok        token
		value      string
		fromArg    bool
		start, end int // span in the expanded string
	}
	var pieces []piece
	var expanded strings.Builder
	for _, t := range toks {
		v, fromArg := t.expand(in.env)
		pieces = append(pieces, piece{tok: t, value: v, fromArg: fromArg, start: expanded.Len(), end: expanded.Len() + len(v)})
		expanded.WriteString(v)
	}
	if expanded.String() != in.current {
		return fileEdit{}, fmt.Errorf("%w: image %q at %s expands to %q here, but Compose loaded %q; update it by hand",
			deployer.ErrUnsupported, loc.raw(), where, expanded.String(), in.current)
	}

	// The smallest changed region of the expanded reference must fall into
	// exactly one piece of the template.
	cur, want := in.current, in.want
	cp := 0
	for cp < len(cur) && cp < len(want) && cur[cp] == want[cp] {
		cp++
	}
	cs := 0
	for cs < len(cur)-cp && cs < len(want)-cp && cur[len(cur)-1-cs] == want[len(want)-1-cs] {
		cs++
	}
	a, b := cp, len(cur)-cs
	mid := want[cp : len(want)-cs]
	chosen := -1
	for i, p := range pieces {
		if p.start <= a && b <= p.end {
			if chosen < 0 || (!pieces[chosen].tok.isVar() && p.tok.isVar()) {
				chosen = i
			}
		}
	}
	if chosen < 0 {
		return fileEdit{}, fmt.Errorf("%w: image %q at %s is assembled from several parts and the change %q → %q spans more than one; write the tag in one place",
			deployer.ErrUnsupported, loc.raw(), where, cur, want)
	}
	p := pieces[chosen]
	newValue := p.value[:a-p.start] + mid + p.value[b-p.start:]
	t := p.tok
	yamlEdit := func(start, end int, text string) (fileEdit, error) {
		e := fileEdit{file: loc.file, before: loc.content, start: loc.start + start, end: loc.start + end, text: text, line: loc.line}
		var probe yaml.Node
		if err := yaml.Unmarshal(e.after(), &probe); err != nil {
			return fileEdit{}, fmt.Errorf("%w: rewriting %s would break the YAML: %v", deployer.ErrUnsupported, where, err)
		}
		return e, nil
	}
	switch {
	case t.escaped:
		return fileEdit{}, fmt.Errorf("%w: image %q at %s: the change falls on an escaped $$", deployer.ErrUnsupported, loc.raw(), where)
	case !t.isVar():
		return yamlEdit(t.start, t.end, newValue)
	case t.op == ":+" || t.op == "+":
		return fileEdit{}, fmt.Errorf("%w: image %q at %s uses ${%s%s…}; write the tag plainly", deployer.ErrUnsupported, loc.raw(), where, t.name, t.op)
	case p.fromArg:
		if strings.ContainsAny(newValue, "}$") {
			return fileEdit{}, fmt.Errorf("%w: cannot write %q as the default of ${%s}", deployer.ErrUnsupported, newValue, t.name)
		}
		return yamlEdit(t.argStart, t.argStart+len(t.arg), newValue)
	}
	// The value comes from the environment: edit the env file defining it,
	// if one does and nothing overrides it.
	if _, set := os.LookupEnv(t.name); set {
		return fileEdit{}, fmt.Errorf("%w: image %q at %s takes %s from shipwatch's own environment, which overrides any env file; unset it there or write the tag in the compose file",
			deployer.ErrUnsupported, loc.raw(), where, t.name)
	}
	envLoc, found, err := locateEnvVar(in.envFiles, t.name)
	if err != nil {
		return fileEdit{}, err
	}
	if !found {
		return fileEdit{}, fmt.Errorf("%w: image %q at %s takes %s from a shell variable (no env file of the project sets it: %s); shipwatch cannot change a shell variable: set %s in .env or write the tag in the compose file",
			deployer.ErrUnsupported, loc.raw(), where, t.name, strings.Join(in.envFiles, ", "), t.name)
	}
	if envLoc.raw() != p.value {
		return fileEdit{}, fmt.Errorf("%w: %s sets %s=%q but Compose used %q; update it by hand",
			deployer.ErrUnsupported, envLoc.file, t.name, envLoc.raw(), p.value)
	}
	e := fileEdit{file: envLoc.file, before: envLoc.content, start: envLoc.start, end: envLoc.end, text: newValue, line: envLoc.line}
	if err := checkEnvEdit(e.before, e.after(), t.name, newValue); err != nil {
		return fileEdit{}, fmt.Errorf("%w: %v", deployer.ErrUnsupported, err)
	}
	return e, nil
}

// apply writes the edit: a backup of the file first (kept until the rollout
// ends), then the new content atomically. It refuses when the file changed
// since the edit was planned.
func (e fileEdit) apply() error {
	cur, err := os.ReadFile(e.file)
	if err != nil {
		return err
	}
	if !bytes.Equal(cur, e.before) {
		return fmt.Errorf("%w: %s changed while the rollout was being prepared", deployer.ErrConflict, e.file)
	}
	if err := atomicfile.Write(e.file+backupSuffix, e.before); err != nil {
		return fmt.Errorf("back up %s: %w", e.file, err)
	}
	if err := atomicfile.Write(e.file, e.after()); err != nil {
		return fmt.Errorf("rewrite %s: %w", e.file, err)
	}
	return nil
}

// restore puts the content from before the edit back and removes the backup.
func (e fileEdit) restore() error {
	if err := e.putBack(); err != nil {
		return err
	}
	return e.dropBackup()
}

// putBack puts the content from before the edit back and keeps the backup:
// a rollout's restore drops it only when the previous version runs again,
// so that an agent killed in between finds it on restart (the containers
// may still run the new version although the file names the old one).
func (e fileEdit) putBack() error {
	if err := atomicfile.Write(e.file, e.before); err != nil {
		return fmt.Errorf("restore %s (a copy is in %s): %w", e.file, e.file+backupSuffix, err)
	}
	return nil
}

func (e fileEdit) dropBackup() error {
	if err := os.Remove(e.file + backupSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// verifyRewrite proves, by loading the project again, that the rewrite
// changed the service's image to written and nothing else anywhere: not
// another service sharing a variable, an anchor or an extends base, not a
// network or volume.
func verifyRewrite(before, after *types.Project, svc, written string) error {
	got, ok := after.Services[svc]
	if !ok {
		return fmt.Errorf("after the rewrite the project has no service %s", svc)
	}
	if got.Image != written {
		return fmt.Errorf("%w: after the rewrite the project reads image %q for %s, want %q", deployer.ErrUnsupported, got.Image, svc, written)
	}
	got.Image = before.Services[svc].Image
	if !sameHash(before.Services[svc], got) {
		return fmt.Errorf("%w: the rewrite changes more of %s than its image", deployer.ErrUnsupported, svc)
	}
	var changed []string
	all0, all1 := before.AllServices(), after.AllServices()
	for _, name := range sortedKeys(all0) {
		if name == svc {
			continue
		}
		if b, ok := all1[name]; !ok || !sameHash(all0[name], b) {
			changed = append(changed, "service "+name)
		}
	}
	for _, key := range sortedKeys(before.Networks) {
		b, ok := after.Networks[key]
		a := before.Networks[key]
		ha, _ := composesdk.NetworkHash(&a)
		hb, _ := composesdk.NetworkHash(&b)
		if !ok || ha != hb {
			changed = append(changed, "network "+key)
		}
	}
	for _, key := range sortedKeys(before.Volumes) {
		b, ok := after.Volumes[key]
		ha, _ := composesdk.VolumeHash(before.Volumes[key])
		hb, _ := composesdk.VolumeHash(b)
		if !ok || ha != hb {
			changed = append(changed, "volume "+key)
		}
	}
	if len(changed) > 0 {
		return fmt.Errorf("%w: the rewrite would also change %v, which share the image reference of %s; shipwatch changes only the service it updates: give %s its own tag or variable",
			deployer.ErrUnsupported, changed, svc, svc)
	}
	return nil
}

func sameHash(a, b types.ServiceConfig) bool {
	ha, err1 := composesdk.ServiceHash(a)
	hb, err2 := composesdk.ServiceHash(b)
	return err1 == nil && err2 == nil && ha == hb
}
