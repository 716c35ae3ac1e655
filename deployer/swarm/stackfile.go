package swarm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moby/moby/api/types/swarm"
	"go.yaml.in/yaml/v3"

	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/atomicfile"
)

// Labels `docker stack deploy` puts on the services of a stack.
const (
	LabelStackNamespace = "com.docker.stack.namespace"
	LabelStackImage     = "com.docker.stack.image"
)

// ErrStackFile: the stack file could not be rewritten safely; it is left as
// it was.
var ErrStackFile = errors.New("stack file not rewritten")

// stackFiles maps a stack namespace to its stack file.
type stackFiles map[string]string

// writeBack records a new tag in the stack file of the service's stack, so
// that the next `docker stack deploy` of that file deploys the version
// shipwatch verified instead of the old tag. A failure is reported as a
// step error; the update itself has succeeded.
func (d *Deployer) writeBack(r *run, svc swarm.Service, from, to imageref.Ref) {
	ns := svc.Spec.Labels[LabelStackNamespace]
	path, ok := d.stackFS[ns]
	if ns == "" || !ok || to.Tag == "" || to.Tag == from.Tag {
		return
	}
	start := time.Now()
	service := strings.TrimPrefix(svc.Spec.Name, ns+"_")
	changed, err := RewriteStackFile(path, service, from, to)
	detail := fmt.Sprintf("%s: services.%s.image already says %s", path, service, to.Tag)
	if changed {
		detail = fmt.Sprintf("%s: services.%s.image %s → %s (backup %s)", path, service, from.Tag, to.Tag, path+BackupSuffix)
	}
	r.step("stack-file", start, detail, err)
}

// BackupSuffix is appended to a stack file's name for the copy kept before
// RewriteStackFile changes it.
const BackupSuffix = ".shipwatch.bak"

// RewriteStackFile changes the tag of services.<service>.image in the stack
// (compose) file at path from from.Tag to to.Tag, in place: comments,
// ordering and formatting are kept, the previous content is kept next to
// it (path + BackupSuffix) and the file is replaced atomically. A digest
// pinned in the file is replaced by to's digest. It refuses (ErrStackFile,
// file untouched) when the image comes from a ${VARIABLE}, names another
// repository, or carries a tag other than from.Tag; it does nothing and
// returns false when the file already says to.Tag.
func RewriteStackFile(path, service string, from, to imageref.Ref) (bool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrStackFile, err)
	}
	node, err := imageNode(raw, service)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrStackFile, path, err)
	}
	value := node.Value
	if strings.Contains(value, "$") {
		return false, fmt.Errorf("%w: %s: services.%s.image is %q, set from a variable: change the variable to %s by hand", ErrStackFile, path, service, value, to.Tag)
	}
	ref, err := imageref.Parse(value)
	if err != nil {
		return false, fmt.Errorf("%w: %s: services.%s.image: %v", ErrStackFile, path, service, err)
	}
	if !ref.SameRepo(to) {
		return false, fmt.Errorf("%w: %s: services.%s.image is %s, not %s: the file and the service disagree", ErrStackFile, path, service, value, to.Repo())
	}
	switch ref.Tag {
	case to.Tag:
		if ref.Digest == "" || ref.Digest == to.Digest {
			return false, nil
		}
	case from.Tag:
	default:
		return false, fmt.Errorf("%w: %s: services.%s.image is %s, expected tag %s: the file changed since the stack was deployed; edit it by hand", ErrStackFile, path, service, value, from.Tag)
	}
	repoText, hadDigest := splitImage(value)
	newValue := repoText + ":" + to.Tag
	if hadDigest {
		newValue += "@" + to.Digest
	}
	start, end, err := scalarSpan(raw, node)
	if err != nil {
		return false, fmt.Errorf("%w: %s: services.%s.image: %v", ErrStackFile, path, service, err)
	}
	out := make([]byte, 0, len(raw)+len(newValue))
	out = append(out, raw[:start]...)
	out = append(out, newValue...)
	out = append(out, raw[end:]...)
	if err := replaceFile(path, raw, out); err != nil {
		return false, fmt.Errorf("%w: %v", ErrStackFile, err)
	}
	return true, nil
}

// imageNode finds the scalar node of services.<service>.image.
func imageNode(raw []byte, service string) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %v", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, errors.New("empty file")
	}
	services := mapValue(doc.Content[0], "services")
	if services == nil {
		return nil, errors.New("no services: section")
	}
	svc := mapValue(services, service)
	if svc == nil {
		return nil, fmt.Errorf("no service %q in services:", service)
	}
	img := mapValue(svc, "image")
	if img != nil && (img.Kind == yaml.AliasNode || img.Anchor != "") {
		return nil, fmt.Errorf("service %q shares its image through a YAML anchor: edit it by hand", service)
	}
	if img == nil || img.Kind != yaml.ScalarNode {
		return nil, fmt.Errorf("service %q has no image: (built from source?)", service)
	}
	return img, nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// splitImage cuts "repo[:tag][@digest]" into the repository text as the
// user wrote it and whether a digest was there.
func splitImage(s string) (repo string, digest bool) {
	if i := strings.IndexByte(s, '@'); i >= 0 {
		s, digest = s[:i], true
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[i:], "/") {
		s = s[:i]
	}
	return s, digest
}

// scalarSpan is the byte range of node's text in raw, quotes included, after
// checking that the text there is exactly the node's value (so an escaped or
// folded scalar is refused rather than damaged).
func scalarSpan(raw []byte, node *yaml.Node) (int, int, error) {
	off := 0
	for line := 1; line < node.Line; line++ {
		i := bytes.IndexByte(raw[off:], '\n')
		if i < 0 {
			return 0, 0, errors.New("position out of range")
		}
		off += i + 1
	}
	for col := 1; col < node.Column; col++ {
		_, size := utf8.DecodeRune(raw[off:])
		if size == 0 {
			return 0, 0, errors.New("position out of range")
		}
		off += size
	}
	text := node.Value
	switch node.Style {
	case yaml.DoubleQuotedStyle:
		text = `"` + text + `"`
	case yaml.SingleQuotedStyle:
		text = "'" + text + "'"
	case 0, yaml.FlowStyle:
	default:
		return 0, 0, errors.New("block scalar style: edit it by hand")
	}
	if !bytes.HasPrefix(raw[off:], []byte(text)) {
		return 0, 0, errors.New("written in a form shipwatch does not rewrite (escapes or line breaks): edit it by hand")
	}
	// The new text is quoted like the old one.
	switch node.Style {
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		return off + 1, off + len(text) - 1, nil
	}
	return off, off + len(text), nil
}

// replaceFile keeps old as the backup and puts content in place of path
// atomically, with path's permissions.
func replaceFile(path string, old, content []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	mode := fi.Mode().Perm()
	if err := os.WriteFile(path+BackupSuffix, old, mode); err != nil {
		return fmt.Errorf("keep a backup: %w", err)
	}
	return atomicfile.Write(path, content)
}

// stackTag is the tag the stack file was deployed with: the spec's own tag,
// or the com.docker.stack.image label's when the spec pins a digest only.
func stackTag(svc swarm.Service) imageref.Ref {
	ref, _ := imageref.Parse(specImage(svc.Spec))
	if ref.Tag == "" {
		if l, err := imageref.Parse(svc.Spec.Labels[LabelStackImage]); err == nil && l.SameRepo(ref) {
			ref.Tag = l.Tag
		}
	}
	return ref
}
