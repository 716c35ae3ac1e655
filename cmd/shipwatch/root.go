package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/shipwatch/shipwatch/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// defaultConfigPath is used when neither --config nor SHIPWATCH_CONFIG is set
// and the file exists.
const defaultConfigPath = "/etc/shipwatch/config.yaml"

// app holds what every command shares: streams, environment and global flags.
type app struct {
	stdout, stderr io.Writer
	lookup         func(string) (string, bool)
	configPath     string
	logLevel       string
	logFormat      string
	// execAgent lets `shipwatch agent` exec shipwatch-agent: set for the
	// real command line only, never for a command run inside a test.
	execAgent bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	return runApp(ctx, args, &app{stdout: stdout, stderr: stderr, lookup: lookup})
}

func runApp(ctx context.Context, args []string, a *app) int {
	cmd := newRoot(a)
	cmd.SetArgs(args)
	return exitCode(cmd.ExecuteContext(ctx), a.stderr)
}

func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "shipwatch",
		Short: "Verified, health-gated image updates for Docker Compose and Swarm",
		Long: `shipwatch watches registries for new image tags and digests, proves each candidate
is signed by a trusted party and has a passing vulnerability scan, and only then
rolls it out to Docker Compose or Swarm services, waits until it is healthy, and
rolls back if it is not.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	f := root.PersistentFlags()
	f.StringVarP(&a.configPath, "config", "c", "", "config file (default $SHIPWATCH_CONFIG, else "+defaultConfigPath+" if it exists)")
	f.StringVar(&a.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&a.logFormat, "log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	root.AddCommand(commands(a)...)
	return root
}

// resolvedConfigPath says which config file applies ("" = none: defaults).
func (a *app) resolvedConfigPath() string {
	if a.configPath != "" {
		return a.configPath
	}
	if p, ok := a.lookup("SHIPWATCH_CONFIG"); ok && p != "" {
		return p
	}
	if _, err := os.Stat(defaultConfigPath); err == nil {
		return defaultConfigPath
	}
	return ""
}

// loadConfig loads and validates the config, or returns the defaults when
// there is no config file.
func (a *app) loadConfig() (*config.Config, error) {
	path := a.resolvedConfigPath()
	if path == "" {
		cfg := config.Default()
		return &cfg, nil
	}
	cfg, err := config.Load(path, a.lookup)
	if err != nil {
		return nil, fmt.Errorf("invalid configuration:\n%w", indentErrors(err))
	}
	return cfg, nil
}

// indentErrors puts each joined error on its own indented line.
func indentErrors(err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i := range lines {
		lines[i] = "  " + lines[i]
	}
	return errors.New(strings.Join(lines, "\n"))
}

// logger builds the process logger from the global flags; it is passed down,
// never global.
func (a *app) logger() (zerolog.Logger, error) {
	level, err := zerolog.ParseLevel(a.logLevel)
	if err != nil || a.logLevel == "" {
		return zerolog.Nop(), fmt.Errorf("--log-level %q: use debug, info, warn or error", a.logLevel)
	}
	var w io.Writer = a.stderr
	switch a.logFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: a.stderr, TimeFormat: "15:04:05"}
	case "auto":
		if isTerminal(a.stderr) {
			w = zerolog.ConsoleWriter{Out: a.stderr, TimeFormat: "15:04:05"}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("--log-format %q: use json, console or auto", a.logFormat)
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger(), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
