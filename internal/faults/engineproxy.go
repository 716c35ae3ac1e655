package faults

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// EngineProxy sits between shipwatch and the Docker engine's socket: the
// agent runs with DOCKER_HOST=unix://<proxy socket>, and the suite cuts its
// connections to the engine at chosen moments, as a dockerd restart would.
// It forwards bytes (so hijacked streams — attach, events — work too) and
// sniffs the request lines to trigger cuts on a given API call.
//
// It stands in for restarting dockerd, which this machine shares with other
// users: a restart would cut their engines too (and without live-restore
// stop every container on the host). What the proxy reproduces is the part
// shipwatch sees — every API connection dropped, new ones refused for a
// while — not the containers being stopped and restarted.
type EngineProxy struct {
	upstream string
	sock     string
	ln       net.Listener

	mu        sync.Mutex
	conns     map[net.Conn]net.Conn // client → upstream
	downUntil time.Time
	onRequest func(method, path string)
	cuts      []time.Time
	requests  int
	refused   int
	closed    bool
}

// NewEngineProxy listens on a unix socket in dir (keep dir short: socket
// paths are limited to 107 bytes) and forwards to the engine socket upstream.
func NewEngineProxy(dir, upstream string) (*EngineProxy, error) {
	sock := filepath.Join(dir, "engine.sock")
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("engine proxy: %w", err)
	}
	p := &EngineProxy{upstream: upstream, sock: sock, ln: ln, conns: map[net.Conn]net.Conn{}}
	go p.accept()
	return p, nil
}

// EngineSocket is the path of the engine's unix socket: DOCKER_HOST's when
// it names one, the default otherwise.
func EngineSocket() string {
	if h := os.Getenv("DOCKER_HOST"); strings.HasPrefix(h, "unix://") {
		return strings.TrimPrefix(h, "unix://")
	}
	return "/var/run/docker.sock"
}

// Host is the DOCKER_HOST value that routes a client through the proxy.
func (p *EngineProxy) Host() string { return "unix://" + p.sock }

// OnRequest calls f with the method and path of every API request before
// the request is forwarded (a Cut from f drops the request itself); nil
// removes it. f must not block.
func (p *EngineProxy) OnRequest(f func(method, path string)) {
	p.mu.Lock()
	p.onRequest = f
	p.mu.Unlock()
}

// Cut closes every connection now and refuses new ones for down (the
// engine "restarting"); 0 only cuts.
func (p *EngineProxy) Cut(down time.Duration) {
	p.mu.Lock()
	p.downUntil = time.Now().Add(down)
	p.cuts = append(p.cuts, time.Now())
	conns := p.conns
	p.conns = map[net.Conn]net.Conn{}
	p.mu.Unlock()
	for c, u := range conns {
		_ = c.Close()
		_ = u.Close()
	}
}

// Cuts returns when the proxy cut its connections.
func (p *EngineProxy) Cuts() []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Time(nil), p.cuts...)
}

// Stats returns how many API requests passed and how many connections were
// refused while the engine was "down".
func (p *EngineProxy) Stats() (requests, refused int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests, p.refused
}

// Close stops the proxy and closes every connection.
func (p *EngineProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.Cut(0)
	err := p.ln.Close()
	_ = os.Remove(p.sock)
	return err
}

func (p *EngineProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := time.Now().Before(p.downUntil) || p.closed
		if down {
			p.refused++
		}
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		go p.serve(c)
	}
}

func (p *EngineProxy) serve(c net.Conn) {
	u, err := net.DialTimeout("unix", p.upstream, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		_ = c.Close()
		_ = u.Close()
		return
	}
	p.conns[c] = u
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	go func() { p.copyRequests(u, c); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = u.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

var methods = [][]byte{[]byte("GET "), []byte("POST "), []byte("PUT "), []byte("DELETE "), []byte("HEAD ")}

// copyRequests forwards client bytes upstream and reports request lines
// that start a read (good enough to trigger on: requests on a keep-alive
// connection start a new write from the client).
func (p *EngineProxy) copyRequests(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.sniff(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *EngineProxy) sniff(b []byte) {
	for _, m := range methods {
		if !bytes.HasPrefix(b, m) {
			continue
		}
		line, _, _ := bytes.Cut(b, []byte("\r\n"))
		parts := bytes.Fields(line)
		if len(parts) < 2 {
			return
		}
		p.mu.Lock()
		p.requests++
		f := p.onRequest
		p.mu.Unlock()
		if f != nil {
			f(string(parts[0]), string(parts[1]))
		}
		return
	}
}
