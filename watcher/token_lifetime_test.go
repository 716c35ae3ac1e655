package watcher

import (
	"testing"
	"time"
)

// A registry announcing a huge expires_in must not overflow the token's
// lifetime into a negative duration (the token would then count as expired
// at once and be fetched again for every request). Found by FuzzParseToken.
func TestTokenLifetimeNeverNegative(t *testing.T) {
	for _, tc := range []struct {
		expiresIn int
		want      time.Duration
	}{
		{0, 54 * time.Second},
		{300, 270 * time.Second},
		{9999999999, 24*time.Hour - 30*time.Second},
		{1 << 62, 24*time.Hour - 30*time.Second},
	} {
		if got := tokenLifetime(tc.expiresIn); got != tc.want {
			t.Errorf("tokenLifetime(%d) = %s, want %s", tc.expiresIn, got, tc.want)
		}
	}
}
