// Package watcher is shipwatch's registry side: it resolves tags to digests
// with manifest HEADs, lists tags only for tag-following policies, applies
// each target's tag policy and returns the candidate to deploy pinned by
// digest, with as few registry requests as the answer allows. It never
// imports Docker.
//
// # Tag policy
//
// A PolicySpec is compiled once (CompilePolicy) and applied per target:
//
//   - Mode "digest" (the default) follows the digest of the running tag
//     (":1.4", ":latest"): one HEAD; a candidate when the digest differs.
//   - Mode "semver" follows the newest version tag. Tags are read by
//     ParseVersionTag: optional "v", one to three numbers, an optional
//     pre-release ("rc.1", "beta2") and an optional suffix ("alpine").
//     A candidate must have the running tag's shape — the same number of
//     numeric parts and exactly the same suffix — so "1.27" moves to
//     "1.28" (never to "1.27.3"), "1.27.3" to "1.27.4", "1.27.3-alpine"
//     to "1.27.4-alpine" (never to "-alpine3.21" or "-bookworm"). It must
//     be inside Range, a pre-release only when Prerelease is set, pass the
//     Include/Exclude regexes, and be strictly newer than the running tag:
//     nothing older is ever proposed. Among equal versions ("v1.3.0" and
//     "1.3.0") the running tag's prefix wins. When nothing newer is
//     allowed and the running tag is, its digest is followed as in mode
//     digest. The running tag must be a version ("latest" under semver is
//     an error that says to use mode digest).
//   - Include/Exclude apply to either mode (in mode digest, to the running
//     tag); they are unanchored Go regexes.
//   - Frozen proposes nothing and sends no request.
//
// There is no regex-only mode that picks "the newest" matching tag: tag
// names carry no reliable order ("build-9" sorts after "build-10") and
// push time costs a manifest and config GET per tag. Following tags needs
// version tags.
//
// # Registry traffic
//
// Per Check call each (repository, tag) is resolved with one HEAD and each
// repository's tags are listed once (Link pagination), however many
// requests share them. Manifests are fetched only to validate a candidate
// (size cap, digest of the content, JSON structure, media type, this
// platform in an index) or to look inside an index whose digest differs
// from the running one, and a validated manifest is never fetched again:
// an unchanged image costs no GET, which matters because Docker Hub
// counts manifest GETs against the pull quota. Per registry the watcher
// pings /v2/ once per lifetime, keeps one HTTP client (keep-alive, HTTP/2
// over TLS), caches bearer tokens per repository scope for their
// lifetime, bounds requests in flight (per registry and overall) and per
// second, waits out 429 Retry-After (and pauses the registry meanwhile)
// and retries 5xx, timeouts and network errors a few times with capped,
// jittered backoff. 401, 403 and 404 are not retried.
//
// # Multi-platform images
//
// The running digest may be the index the tag points at (an image pulled
// by tag) or one platform's manifest inside it. When the tag's digest
// differs from the running one and the tag points at an index, the index
// is fetched once: if it still holds the running manifest, nothing
// changed. A candidate is always the digest the tag points at (the index),
// and an index without an image for Options.Platform is an error, not a
// candidate.
//
// # Failures
//
// A failure is never an update: Result.Err is set, Change is ChangeNone
// and Candidate is zero. Errors are *Error values that wrap one sentinel
// (ErrNotFound, ErrUnauthorized, ErrRateLimited, …), name the registry and
// reference, say what to do, and never contain credentials or tokens.
package watcher
