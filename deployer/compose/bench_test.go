package compose_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shipwatch/shipwatch/deployer"
	"github.com/shipwatch/shipwatch/deployer/compose"
	"github.com/shipwatch/shipwatch/imageref"
	"github.com/shipwatch/shipwatch/internal/testenv"
)

// BenchmarkDeployOverhead measures the time shipwatch adds to a Compose
// service update beyond the engine's own pull + recreate. Each iteration
// makes the same semver update twice, on two identical fresh projects with
// images the engine does not have yet:
//
//   - the Compose SDK alone, as a user would: edit the tag in the compose
//     file, `docker compose up -d` (the SDK pulls the tag and recreates);
//   - shipwatch's Deploy, minus its health gate (one sample).
//
// Metrics: sdk-ms (the SDK alone), shipwatch-ms (Deploy without the gate),
// overhead-ms (the difference), own-steps-ms (Deploy without the gate, the
// pull and the converge), and each step of Deploy.
//
//	go test ./deployer/compose -run '^$' -bench DeployOverhead -benchtime 5x
func BenchmarkDeployOverhead(b *testing.B) {
	cli := testenv.Engine(b)
	reg := testenv.NewRegistry(b)
	testenv.RemoveImagesOf(b, cli, reg.Host)
	ctx := testenv.Context(b, 30*time.Minute)
	dep, err := compose.New(ctx, compose.Options{HealthSamples: 1, HealthInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	defer dep.Close()
	push := func(repo, tag string, i int) imageref.Ref {
		app := testenv.App{Version: fmt.Sprintf("%s-%d", tag, i), Labels: map[string]string{"shipwatch.bench": reg.Host}}
		d := reg.MustPush(b, repo+":"+tag, app.MustImage(b))
		return imageref.MustParse(reg.Ref(repo + ":" + tag)).WithDigest(d)
	}
	var sdk, ship, gate time.Duration
	steps := map[string]time.Duration{}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// Two repositories, so that neither run finds the other's image.
		push("bench/sdk", "1.0.0", i)
		push("bench/sdk", "1.1.0", i)
		push("bench/ship", "1.0.0", i)
		to := push("bench/ship", "1.1.0", i)
		file := func(repo string) string {
			return "services:\n  web:\n    image: " + reg.Ref(repo+":1.0.0") + " # app\n    ports: [\"127.0.0.1::8080\"]\n"
		}
		ps := testenv.NewComposeProject(b, map[string]string{"compose.yaml": file("bench/sdk")})
		ps.MustUp(b)
		pw := testenv.NewComposeProject(b, map[string]string{"compose.yaml": file("bench/ship")})
		pw.MustUp(b)
		target := benchTarget(b, pw)
		b.StartTimer()

		start := time.Now()
		edited := strings.Replace(file("bench/sdk"), ":1.0.0 ", ":1.1.0 ", 1)
		if err := os.WriteFile(filepath.Join(ps.Dir, "compose.yaml"), []byte(edited), 0o644); err != nil {
			b.Fatal(err)
		}
		if err := ps.Up(ctx); err != nil {
			b.Fatal(err)
		}
		sdk += time.Since(start)

		start = time.Now()
		res := dep.Deploy(ctx, deployer.Plan{Target: target, To: to}, nil)
		took := time.Since(start)
		if res.Outcome != deployer.Updated {
			b.Fatalf("deploy: %s (%v)", res.Outcome, res.Cause)
		}
		for _, s := range res.Steps {
			steps[s.Name] += s.Took
			if s.Name == "health gate" {
				gate += s.Took
			}
		}
		ship += took
	}
	n := float64(b.N)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
	b.ReportMetric(ms(sdk), "sdk-ms/op")
	b.ReportMetric(ms(ship-gate), "shipwatch-ms/op")
	b.ReportMetric(ms(ship-gate-sdk), "overhead-ms/op")
	// shipwatch's own work: every step but the engine's pull and recreate
	// and the health gate.
	b.ReportMetric(ms(ship-gate-steps["pull"]-steps["converge"]), "own-steps-ms/op")
	for _, name := range []string{"load project", "drift guard", "plan", "pull", "verify digest", "protect previous image", "rewrite files", "tag image", "converge", "finish"} {
		b.ReportMetric(ms(steps[name]), strings.ReplaceAll(name, " ", "-")+"-ms/op")
	}
}

// benchTarget is the smallest target of the project's web service: the
// deployer reads the rest from the containers' labels.
func benchTarget(b *testing.B, p *testenv.ComposeProject) deployer.Target {
	b.Helper()
	return deployer.Target{
		ID: "compose/" + p.Name + "/web", Kind: deployer.KindCompose, Name: p.Name + "/web",
		Compose: &deployer.ComposeService{Project: p.Name, Service: "web"},
	}
}
