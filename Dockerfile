# syntax=docker/dockerfile:1
# shipwatch: a static binary in a minimal, non-root runtime image.
#
#   docker build -t shipwatch .
#   docker run -d --name shipwatch \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v shipwatch-state:/var/lib/shipwatch \
#     -v "$PWD/shipwatch.yaml:/etc/shipwatch/config.yaml:ro" \
#     shipwatch agent
#
# The image runs as the unprivileged user 65532. It reaches the Docker socket
# through the socket's group (--group-add above); where that is not possible,
# run with --user 0 or, better, through a socket proxy (docs/deploy.md).

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Two binaries from one source: shipwatch (every command) and shipwatch-agent
# (only the agent, built with -tags agentonly). `shipwatch agent` execs
# shipwatch-agent, which keeps an idle agent small and starts `shipwatch
# helper` processes to verify and roll out (docs/deploy.md).
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/shipwatch ./cmd/shipwatch \
 && CGO_ENABLED=0 go build -tags agentonly -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/shipwatch-agent ./cmd/shipwatch \
 && mkdir -p /out/state && chown 65532:65532 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shipwatch /out/shipwatch-agent /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/state /var/lib/shipwatch
USER 65532:65532
VOLUME ["/var/lib/shipwatch"]
ENTRYPOINT ["shipwatch"]
CMD ["agent"]
