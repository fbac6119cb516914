# syntax=docker/dockerfile:1
#
# kustomer-sync in a small, non-root image:
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t kustomer-sync .
#   docker run --rm kustomer-sync --help
#
# The binary is static (no libc), so the final image is distroless "static": CA certificates, tzdata
# and a non-root user, nothing else (no shell). It is PID 1 and started in exec form, so SIGTERM
# reaches it and `run` drains in-flight events within --drain-timeout before exiting.

# GO_VERSION must be at least go.mod's go line (the image's GOTOOLCHAIN=local does not download one).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/kustomer-sync ./cmd/kustomer-sync

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kustomer-sync /usr/local/bin/kustomer-sync
# 65532 is distroless's "nonroot"; numeric, so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /home/nonroot
# --metrics-addr :9090 (GET /metrics)
EXPOSE 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/kustomer-sync"]
CMD ["run"]
