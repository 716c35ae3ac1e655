package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"

	"github.com/shipwatch/shipwatch/api"
	"github.com/shipwatch/shipwatch/state"
)

// agent is a stand-in for the agent that implements api.Backend.
type agent struct{}

func (agent) Targets(context.Context) (any, error) {
	return []map[string]string{{"id": "compose:shop/web", "outcome": "up-to-date"}}, nil
}
func (agent) History(context.Context, string, int) ([]state.Entry, error) { return nil, nil }
func (agent) Check(context.Context, []string) (any, error)                { return nil, nil }
func (agent) Rollout(context.Context, api.RolloutRequest) (any, error)    { return nil, nil }
func (agent) Rollback(context.Context, string, string) (any, error)       { return nil, nil }
func (agent) Approvals(context.Context) ([]state.Approval, error)         { return nil, nil }
func (agent) Approve(context.Context, string, string, string) (state.Approval, error) {
	return state.Approval{}, nil
}
func (agent) Quarantine(context.Context) ([]state.Quarantined, error)      { return nil, nil }
func (agent) ClearQuarantine(context.Context, string, string) (int, error) { return 0, nil }
func (agent) Trigger(context.Context, api.Hint) int                        { return 0 }
func (agent) Ready(context.Context) error                                  { return nil }

func ExampleServer_Handler() {
	s, err := api.New(agent{}, api.Options{Listen: "0.0.0.0:8080", Token: "0123456789abcdef0123"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	get := func(token string) {
		req := httptest.NewRequest("GET", "/v1/targets", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		fmt.Println(rec.Code, strings.TrimSpace(string(body)))
	}
	get("")
	get("0123456789abcdef0123")
	// Output:
	// 401 {"error":"missing token: send Authorization: Bearer <api token>"}
	// 200 [{"id":"compose:shop/web","outcome":"up-to-date"}]
}
