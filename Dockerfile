# syntax=docker/dockerfile:1
# Static, non-root, minimal image: the binary, CA certificates, a passwd
# file naming the non-root user, and the state directory it owns. The last
# stage holds exactly the tree `make image` puts in its one layer (both come
# from tools/image), so this build and `make image` give the same files.
# `make image` builds the image without a container engine, reproducibly.
# Here, the same commit gives the same digest when every timestamp is the
# commit's:
#   buildah bud --timestamp $(git log -1 --format=%ct) \
#     --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse --short HEAD) -t cdcbridge .
# With BuildKit: --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
#   --output type=docker,rewrite-timestamp=true
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
 && go run ./tools/image/cmd/mkimage -binary /out/cdcbridge -tree /rootfs

FROM scratch
COPY --from=build /rootfs/ /
# Owners stated again, whichever way the builder treats them on COPY:
# the checkpoint file and DLQ live in /var/lib/cdcbridge; mount a
# persistent volume over it (a new volume takes this owner).
COPY --from=build --chown=65532:65532 /rootfs/var/lib/cdcbridge /var/lib/cdcbridge
COPY --from=build --chown=65532:65532 /rootfs/home/nonroot /home/nonroot
USER 65532:65532
WORKDIR /var/lib/cdcbridge
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/cdcbridge"]
