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
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/shipwatch ./cmd/shipwatch \
 && mkdir -p /out/state && chown 65532:65532 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/shipwatch /usr/local/bin/shipwatch
COPY --from=build --chown=65532:65532 /out/state /var/lib/shipwatch
USER 65532:65532
VOLUME ["/var/lib/shipwatch"]
ENTRYPOINT ["shipwatch"]
CMD ["agent"]
