// Package image builds cdcbridge's container image without a container
// engine: one layer holding the static binary, CA certificates, a passwd
// file naming the non-root user and the state directory it owns, written
// as an OCI image layout archive that also carries `docker save`'s
// manifest.json, for `docker load`, `podman load` and `skopeo`. Every
// byte follows from the inputs (the binary, the CA bundle, the version and
// a timestamp), so the same commit builds the same image digest.
//
// The Dockerfile's last stage copies the same tree (see WriteTree), so the
// image built by Docker and the one built here hold the same files.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// The non-root user the image runs as (distroless' "nonroot").
const (
	UID        = 65532
	GID        = 65532
	Binary     = "/usr/local/bin/cdcbridge"
	StateDir   = "/var/lib/cdcbridge"
	CACerts    = "/etc/ssl/certs/ca-certificates.crt"
	MetricPort = "9464/tcp"
)

// File is one entry of the image's file system. Directories have Dir set
// and no Data.
type File struct {
	Path     string // absolute
	Mode     fs.FileMode
	UID, GID int
	Dir      bool
	Data     []byte
}

// Files lists the image's file system for the given binary and CA bundle,
// parents before children.
func Files(binary, caCerts []byte) []File {
	dir := func(p string, mode fs.FileMode, owner int) File {
		return File{Path: p, Mode: mode, UID: owner, GID: owner, Dir: true}
	}
	file := func(p string, mode fs.FileMode, data []byte) File {
		return File{Path: p, Mode: mode, Data: data}
	}
	files := []File{
		dir("/etc", 0o755, 0),
		file("/etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n")),
		file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")),
		dir("/etc/ssl", 0o755, 0),
		dir("/etc/ssl/certs", 0o755, 0),
		file(CACerts, 0o644, caCerts),
		dir("/home", 0o755, 0),
		dir("/home/nonroot", 0o700, UID),
		dir("/tmp", 0o777|fs.ModeSticky, 0),
		dir("/usr", 0o755, 0),
		dir("/usr/local", 0o755, 0),
		dir("/usr/local/bin", 0o755, 0),
		file(Binary, 0o755, binary),
		dir("/var", 0o755, 0),
		dir("/var/lib", 0o755, 0),
		// The default checkpoint file and DLQ live here. A volume mounted
		// over it takes this owner when new, so the non-root user can write.
		dir(StateDir, 0o755, UID),
		dir(StateDir+"/dlq", 0o755, UID),
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files
}

// Meta is what the image says about itself.
type Meta struct {
	Version  string    // cdcbridge's version, stamped into the binary too
	Revision string    // the commit it was built from
	Created  time.Time // the commit's time, for a reproducible build
	Arch     string    // GOARCH of the binary
}

// Tag is the image reference `docker load` gives the image.
func (m Meta) Tag() string { return "cdcbridge:" + tagSafe(m.Version) }

var tagInvalid = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// tagSafe turns a version into a valid image tag: letters, digits, "_",
// "." and "-", not starting with "." or "-", at most 128 characters.
func tagSafe(v string) string {
	v = tagInvalid.ReplaceAllString(v, "-")
	v = strings.TrimLeft(v, ".-")
	if len(v) > 128 {
		v = v[:128]
	}
	if v == "" {
		v = "dev"
	}
	return v
}

// Media types of the OCI image specification.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Config is the image configuration (the parts cdcbridge sets).
type Config struct {
	Created      string `json:"created"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Config       struct {
		User         string              `json:"User"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		WorkingDir   string              `json:"WorkingDir"`
		Labels       map[string]string   `json:"Labels"`
		StopSignal   string              `json:"StopSignal"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	} `json:"history"`
}

// Built describes an archive Write produced.
type Built struct {
	Digest    string // the manifest's digest: the image's identity
	Tag       string
	LayerSize int64 // compressed layer, what a registry stores and a node pulls
	TreeSize  int64 // uncompressed layer, what the image occupies unpacked
}

// Write writes the image as an OCI image layout tar archive to w. The
// archive also carries the manifest.json of `docker save`'s format, for
// Docker versions that load only that.
func Write(w io.Writer, files []File, m Meta) (Built, error) {
	created := m.Created.UTC()
	layerTar, err := layer(files, created)
	if err != nil {
		return Built{}, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write(layerTar)
	if err := zw.Close(); err != nil {
		return Built{}, err
	}
	layerBlob := gz.Bytes()

	var cfg Config
	cfg.Created = created.Format(time.RFC3339)
	cfg.Architecture, cfg.OS = m.Arch, "linux"
	cfg.Config.User = fmt.Sprintf("%d:%d", UID, GID)
	cfg.Config.ExposedPorts = map[string]struct{}{MetricPort: {}}
	cfg.Config.Env = []string{"PATH=/usr/local/bin"}
	cfg.Config.Entrypoint = []string{Binary}
	cfg.Config.WorkingDir = StateDir
	cfg.Config.StopSignal = "SIGTERM"
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    "cdcbridge",
		"org.opencontainers.image.version":  m.Version,
		"org.opencontainers.image.revision": m.Revision,
		"org.opencontainers.image.created":  cfg.Created,
	}
	cfg.RootFS.Type = "layers"
	cfg.RootFS.DiffIDs = []string{digest(layerTar)}
	cfg.History = append(cfg.History, struct {
		Created   string `json:"created"`
		CreatedBy string `json:"created_by"`
	}{cfg.Created, "make image"})
	cfgBlob, err := json.Marshal(cfg)
	if err != nil {
		return Built{}, err
	}

	manifest := struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{2, mediaManifest, blobDesc(mediaConfig, cfgBlob), []descriptor{blobDesc(mediaLayer, layerBlob)}}
	manifestBlob, err := json.Marshal(manifest)
	if err != nil {
		return Built{}, err
	}
	tag := m.Tag()
	md := blobDesc(mediaManifest, manifestBlob)
	md.Annotations = map[string]string{
		"io.containerd.image.name":          "docker.io/library/" + tag,
		"org.opencontainers.image.ref.name": strings.TrimPrefix(tag, "cdcbridge:"),
	}
	index, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{2, mediaIndex, []descriptor{md}})
	if err != nil {
		return Built{}, err
	}
	dockerManifest, err := json.Marshal([]struct {
		Config   string
		RepoTags []string
		Layers   []string
	}{{blobPath(cfgBlob), []string{tag}, []string{blobPath(layerBlob)}}})
	if err != nil {
		return Built{}, err
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"blobs/", nil},
		{"blobs/sha256/", nil},
		{blobPath(cfgBlob), cfgBlob},
		{blobPath(layerBlob), layerBlob},
		{blobPath(manifestBlob), manifestBlob},
		{"index.json", index},
		{"manifest.json", dockerManifest},
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: created, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if strings.HasSuffix(e.name, "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return Built{}, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return Built{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Built{}, err
	}
	return Built{Digest: md.Digest, Tag: tag, LayerSize: int64(len(layerBlob)), TreeSize: int64(len(layerTar))}, nil
}

// layer is the uncompressed layer: the files in order, owned and moded as
// listed, every time set to created, no user or group names.
func layer(files []File, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path {
			return nil, fmt.Errorf("image: %q is not a clean absolute path", f.Path)
		}
		h := &tar.Header{
			Name:     strings.TrimPrefix(f.Path, "/"),
			Mode:     int64(f.Mode.Perm()),
			Uid:      f.UID,
			Gid:      f.GID,
			ModTime:  created,
			Typeflag: tar.TypeReg,
			Size:     int64(len(f.Data)),
			Format:   tar.FormatPAX,
		}
		if f.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		if f.Dir {
			h.Name += "/"
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteTree writes the files under root (which must be empty or absent),
// owned and moded as listed: the tree the Dockerfile's last stage copies.
// Owners can be set only by root; otherwise it fails.
func WriteTree(root string, files []File) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("image: %w", err)
	}
	for _, f := range files {
		p := filepath.Join(root, filepath.FromSlash(f.Path))
		var err error
		if f.Dir {
			err = os.Mkdir(p, f.Mode.Perm())
		} else {
			err = os.WriteFile(p, f.Data, f.Mode.Perm())
		}
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		// Mkdir and WriteFile apply the umask; set the mode exactly.
		if err := os.Chmod(p, f.Mode.Perm()|f.Mode&fs.ModeSticky); err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if err := os.Lchown(p, f.UID, f.GID); err != nil {
			return fmt.Errorf("image: %w", err)
		}
	}
	return nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:")
}

func blobDesc(mediaType string, b []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digest(b), Size: int64(len(b))}
}

// Inspect checks that binary is a statically linked Linux ELF executable,
// as the image has no C library to load, and returns its GOARCH.
func Inspect(binary []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		return "", fmt.Errorf("image: the binary is not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("image: the binary is dynamically linked (it names an interpreter); build it with CGO_ENABLED=0")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return "", fmt.Errorf("image: the binary needs shared libraries %v; build it with CGO_ENABLED=0", libs)
	}
	arch, ok := map[elf.Machine]string{elf.EM_X86_64: "amd64", elf.EM_AARCH64: "arm64"}[f.Machine]
	if !ok {
		return "", fmt.Errorf("image: unsupported machine %s", f.Machine)
	}
	return arch, nil
}
