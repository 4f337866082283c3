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
      -o /out/cdcbridge ./cmd/cdcbridge

# distroless/static carries CA certificates, tzdata and a nonroot user, and no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/cdcbridge /usr/local/bin/cdcbridge
USER nonroot:nonroot
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/cdcbridge"]
