// Package pin keeps the dependencies chosen in the design in go.mod while the
// packages that use them are being written. It is deleted once every module
// listed here is imported by real code.
package pin

import (
	_ "github.com/Masterminds/semver/v3"
	_ "github.com/compose-spec/compose-go/v2/cli"
	_ "github.com/docker/cli/cli/command"
	_ "github.com/docker/compose/v5/pkg/compose"
	_ "github.com/google/go-containerregistry/pkg/registry"
	_ "github.com/google/go-containerregistry/pkg/v1/remote"
	_ "github.com/moby/moby/client"
	_ "github.com/nicholas-fedor/shoutrrr"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/robfig/cron/v3"
	_ "github.com/rs/zerolog"
	_ "github.com/sigstore/sigstore-go/pkg/testing/ca"
	_ "github.com/sigstore/sigstore-go/pkg/verify"
	_ "github.com/sigstore/sigstore/pkg/signature"
	_ "github.com/spf13/cobra"
	_ "go.etcd.io/bbolt"
	_ "go.yaml.in/yaml/v3"
)
