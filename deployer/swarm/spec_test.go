package swarm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/swarm"

	"github.com/shipwatch/shipwatch/deployer"
)

func TestApplyDefaults(t *testing.T) {
	own := &swarm.UpdateConfig{Parallelism: 3, FailureAction: swarm.UpdateFailureActionPause, Monitor: time.Minute, Order: swarm.UpdateOrderStopFirst}
	hostPort := &swarm.EndpointSpec{Ports: []swarm.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: swarm.PortConfigPublishModeHost}}}
	ingressPort := &swarm.EndpointSpec{Ports: []swarm.PortConfig{{TargetPort: 80, PublishedPort: 8080, PublishMode: swarm.PortConfigPublishModeIngress}}}
	dynamicHostPort := &swarm.EndpointSpec{Ports: []swarm.PortConfig{{TargetPort: 80, PublishMode: swarm.PortConfigPublishModeHost}}}
	health := &container.HealthConfig{Test: []string{"CMD", "/app", "health"}, Interval: 10 * time.Second, Timeout: 5 * time.Second, Retries: 3}
	for _, tc := range []struct {
		name     string
		edit     func(*swarm.ServiceSpec)
		defaults UpdateDefaults
		want     swarm.UpdateConfig // the update config afterwards
		rollback swarm.UpdateOrder  // the rollback config's order afterwards
	}{
		{"none set: safe defaults", nil, UpdateDefaults{},
			swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: DefaultMonitor, Order: swarm.UpdateOrderStartFirst}, swarm.UpdateOrderStartFirst},
		{"own config kept", func(s *swarm.ServiceSpec) { s.UpdateConfig = own }, UpdateDefaults{}, *own, swarm.UpdateOrderStartFirst},
		{"host port: stop-first", func(s *swarm.ServiceSpec) { s.EndpointSpec = hostPort }, UpdateDefaults{},
			swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: DefaultMonitor, Order: swarm.UpdateOrderStopFirst}, swarm.UpdateOrderStopFirst},
		{"ingress port: start-first", func(s *swarm.ServiceSpec) { s.EndpointSpec = ingressPort }, UpdateDefaults{},
			swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: DefaultMonitor, Order: swarm.UpdateOrderStartFirst}, swarm.UpdateOrderStartFirst},
		{"dynamic host port: start-first", func(s *swarm.ServiceSpec) { s.EndpointSpec = dynamicHostPort }, UpdateDefaults{},
			swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: DefaultMonitor, Order: swarm.UpdateOrderStartFirst}, swarm.UpdateOrderStartFirst},
		{"max replicas per node: stop-first", func(s *swarm.ServiceSpec) { s.TaskTemplate.Placement = &swarm.Placement{MaxReplicas: 1} }, UpdateDefaults{},
			swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: DefaultMonitor, Order: swarm.UpdateOrderStopFirst}, swarm.UpdateOrderStopFirst},
		{"healthcheck raises the monitor", func(s *swarm.ServiceSpec) { s.TaskTemplate.ContainerSpec.Healthcheck = health }, UpdateDefaults{Monitor: 5 * time.Second},
			swarm.UpdateConfig{Parallelism: 1, FailureAction: swarm.UpdateFailureActionRollback, Monitor: 35 * time.Second, Order: swarm.UpdateOrderStartFirst}, swarm.UpdateOrderStartFirst},
		{"configured defaults", nil, UpdateDefaults{Parallelism: 2, Delay: time.Second, Monitor: 3 * time.Second, MaxFailureRatio: 0.5, StopFirst: true},
			swarm.UpdateConfig{Parallelism: 2, Delay: time.Second, FailureAction: swarm.UpdateFailureActionRollback, Monitor: 3 * time.Second, MaxFailureRatio: 0.5, Order: swarm.UpdateOrderStopFirst}, swarm.UpdateOrderStopFirst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := swarm.ServiceSpec{TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Image: "x"}}}
			if tc.edit != nil {
				tc.edit(&spec)
			}
			applyDefaults(&spec, tc.defaults)
			if *spec.UpdateConfig != tc.want {
				t.Errorf("update config: got %+v, want %+v", *spec.UpdateConfig, tc.want)
			}
			rb := spec.RollbackConfig
			if rb == nil || rb.FailureAction != swarm.UpdateFailureActionPause || rb.Order != tc.rollback {
				t.Errorf("rollback config: got %+v, want failure action pause, order %s", rb, tc.rollback)
			}
		})
	}
}

func TestDeriveDeadline(t *testing.T) {
	health := &container.HealthConfig{Test: []string{"CMD", "true"}, Interval: 10 * time.Second, Timeout: 5 * time.Second, Retries: 3, StartPeriod: 20 * time.Second}
	for _, tc := range []struct {
		name  string
		spec  swarm.ServiceSpec
		tasks int
		want  time.Duration
	}{
		{"small service: the floor", swarm.ServiceSpec{TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{}}}, 1, MinDeadline},
		// 10 batches × (5s swarm default monitor + 30s unknown health + 30s start).
		{"ten replicas one by one", swarm.ServiceSpec{TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{}}}, 10, 650 * time.Second},
		// 2 batches × (60s monitor + 10s delay + (10s×3+5s+20s) health + 30s).
		{"own config and healthcheck", swarm.ServiceSpec{
			TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{Healthcheck: health}},
			UpdateConfig: &swarm.UpdateConfig{Parallelism: 5, Delay: 10 * time.Second, Monitor: time.Minute},
		}, 10, 2 * (60 + 10 + 55 + 30) * time.Second},
		{"parallelism 0 is all at once", swarm.ServiceSpec{
			TaskTemplate: swarm.TaskSpec{ContainerSpec: &swarm.ContainerSpec{}},
			UpdateConfig: &swarm.UpdateConfig{Monitor: 3 * time.Minute},
		}, 50, 4 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := deriveDeadline(tc.spec, tc.tasks, false); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestDiagnosis(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fs         []TaskFailure
		deadline   bool
		imageFault bool
		health     bool
		want       error
	}{
		{"crash", []TaskFailure{{State: "failed", Err: "task: non-zero exit (1)", ExitCode: 1}}, false, true, true, nil},
		{"crash before its healthcheck passed", []TaskFailure{{State: "failed", Err: "task: non-zero exit (1)", ExitCode: 1, Health: "unhealthy"}}, false, true, true, nil},
		{"unhealthy, exited cleanly", []TaskFailure{{State: "complete", Health: "unhealthy"}}, false, true, true, nil},
		{"oom", []TaskFailure{{State: "failed", ExitCode: 137, OOMKilled: true}}, false, true, true, nil},
		{"ended on its own", []TaskFailure{{State: "complete", Message: "finished"}}, false, true, true, nil},
		{"pull", []TaskFailure{{State: "rejected", Err: "No such image: registry.example/team/web:1.1.0@sha256:…"}}, false, false, false, ErrPull},
		{"never healthy", []TaskFailure{{State: "starting"}}, true, true, true, nil},
		{"no node", []TaskFailure{{State: "pending", Err: "no suitable node (insufficient resources on 3 nodes)"}}, true, false, false, nil},
		{"nothing known", nil, true, false, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reasons, fault := diagnosis(tc.fs, tc.deadline)
			if fault != tc.imageFault {
				t.Errorf("image fault: got %v, want %v", fault, tc.imageFault)
			}
			err := errors.Join(reasons...)
			var he *deployer.HealthError
			if got := errors.As(err, &he); got != tc.health {
				t.Errorf("health error: got %v (%v), want %v", got, err, tc.health)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("reasons %v, want %v", err, tc.want)
			}
			if tc.name == "crash before its healthcheck passed" && (he == nil || !strings.Contains(he.Reason, "exited with code 1")) {
				t.Errorf("reason %v, want the crash, not the healthcheck", err)
			}
		})
	}
}

func TestUpdateErrorSaysWhatHappened(t *testing.T) {
	e := &UpdateError{
		Service: "web", Image: "web:1.1", State: swarm.UpdateStateRollbackCompleted, Message: "rollback completed",
		Tasks: []TaskFailure{{ID: "abcdefabcdefabcdef", Slot: 2, State: "failed", Err: "task: non-zero exit (1)"}},
		Errs:  []error{ErrSwarmRollback, &deployer.HealthError{Reason: "1 task(s) of the new version exited with code 1"}},
	}
	want := `service web, image web:1.1: swarm rolled the update back: health gate: 1 task(s) of the new version exited with code 1 (swarm update state "rollback_completed": rollback completed); task abcdefabcdef (slot 2) failed: task: non-zero exit (1)`
	if got := e.Error(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !errors.Is(e, ErrSwarmRollback) {
		t.Error("errors.Is does not see the sentinel")
	}
}
