# syntax=docker/dockerfile:1
# Static, non-root, minimal image: the binary, CA certificates and tzdata.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=none
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" \
      -o /out/cdcbridge ./cmd/cdcbridge \
 && mkdir -p /out/state/dlq

# distroless/static carries CA certificates, tzdata and a nonroot user, and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cdcbridge /usr/local/bin/cdcbridge
# The default checkpoint file and DLQ live here; mount a persistent volume
# over it (a new volume takes this owner, so the non-root user can write).
COPY --from=build --chown=65532:65532 /out/state /var/lib/cdcbridge
USER nonroot:nonroot
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/cdcbridge"]
