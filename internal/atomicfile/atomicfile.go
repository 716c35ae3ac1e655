// Package atomicfile replaces files so that a crash never leaves one
// half-written: the new content goes to a temporary file in the same
// directory, is synced, and is renamed over the old one.
package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
)

// Write replaces path with data, keeping the file's permissions and (when
// the process may) its owner; a new file gets mode 0644.
func Write(path string, data []byte) error {
	mode := os.FileMode(0o644)
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".shipwatch-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(name, mode); err != nil {
		return err
	}
	if uid >= 0 {
		_ = os.Lchown(name, uid, gid) // best effort: only root may give files away
	}
	return os.Rename(name, path)
}
