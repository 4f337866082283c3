package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcbridge/cdcbridge/test/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var testMeta = Meta{Version: "1.2.3", Revision: "abc1234", Created: time.Unix(1764000000, 0), Arch: "amd64"}

// TestWriteIsReproducible: the same inputs give the same bytes, and any
// input that changes changes the digest.
func TestWriteIsReproducible(t *testing.T) {
	files := Files([]byte("binary"), []byte("certs"))
	write := func(files []File, m Meta) ([]byte, Built) {
		var buf bytes.Buffer
		b, err := Write(&buf, files, m)
		if err != nil {
			t.Fatal(err)
		}
		return buf.Bytes(), b
	}
	a, ba := write(files, testMeta)
	b, bb := write(Files([]byte("binary"), []byte("certs")), testMeta)
	if !bytes.Equal(a, b) || ba != bb {
		t.Fatalf("two writes of the same image differ: %+v and %+v", ba, bb)
	}
	later := testMeta
	later.Version = "1.2.4"
	if _, bl := write(files, later); bl.Digest == ba.Digest || bl.Tag != "cdcbridge:1.2.4" {
		t.Errorf("another version gave %+v, first %+v", bl, ba)
	}
	if _, bo := write(Files([]byte("binary2"), []byte("certs")), testMeta); bo.Digest == ba.Digest {
		t.Errorf("another binary gave the same digest %s", bo.Digest)
	}
}

// TestArchiveLayout reads the archive as an OCI layout and as Docker's
// load format: every descriptor matches its blob, the config names the
// layer by its uncompressed digest, and the layer holds exactly Files.
func TestArchiveLayout(t *testing.T) {
	files := Files([]byte("\x7fELF pretend"), []byte("-----BEGIN CERTIFICATE-----\n"))
	var buf bytes.Buffer
	built, err := Write(&buf, files, testMeta)
	if err != nil {
		t.Fatal(err)
	}
	entries := readTar(t, buf.Bytes())
	if got := string(entries["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}
	blob := func(d descriptor) []byte {
		t.Helper()
		b, ok := entries["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("no blob for %s", d.Digest)
		}
		if sha(b) != d.Digest || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: digest %s, size %d, descriptor says %d", d.Digest, sha(b), len(b), d.Size)
		}
		return b
	}
	var index struct {
		SchemaVersion int
		MediaType     string
		Manifests     []descriptor
	}
	mustJSON(t, entries["index.json"], &index)
	if index.SchemaVersion != 2 || index.MediaType != mediaIndex || len(index.Manifests) != 1 {
		t.Fatalf("index.json = %s", entries["index.json"])
	}
	md := index.Manifests[0]
	if md.Digest != built.Digest || md.MediaType != mediaManifest || md.Annotations["org.opencontainers.image.ref.name"] != "1.2.3" {
		t.Errorf("index names %+v, Write returned %s", md, built.Digest)
	}
	var manifest struct {
		SchemaVersion int
		MediaType     string
		Config        descriptor
		Layers        []descriptor
	}
	mustJSON(t, blob(md), &manifest)
	if manifest.Config.MediaType != mediaConfig || len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != mediaLayer {
		t.Fatalf("manifest = %+v", manifest)
	}
	var cfg Config
	mustJSON(t, blob(manifest.Config), &cfg)
	zr, err := gzip.NewReader(bytes.NewReader(blob(manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	layerTar, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != sha(layerTar) || int64(len(layerTar)) != built.TreeSize {
		t.Errorf("diff_ids %v, layer digest %s", cfg.RootFS.DiffIDs, sha(layerTar))
	}
	c := cfg.Config
	if c.User != "65532:65532" || len(c.Entrypoint) != 1 || c.Entrypoint[0] != Binary || cfg.OS != "linux" || cfg.Architecture != "amd64" ||
		c.Labels["org.opencontainers.image.version"] != "1.2.3" || c.Labels["org.opencontainers.image.revision"] != "abc1234" ||
		cfg.Created != "2025-11-24T16:00:00Z" {
		t.Errorf("config = %s", blob(manifest.Config))
	}
	if _, ok := c.ExposedPorts[MetricPort]; !ok {
		t.Errorf("config exposes %v, not %s", c.ExposedPorts, MetricPort)
	}

	// The layer: exactly the listed files, owners, modes and one time.
	tr := tar.NewReader(bytes.NewReader(layerTar))
	var i int
	for ; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(files) {
			t.Fatalf("extra layer entry %s", h.Name)
		}
		f := files[i]
		name := strings.TrimSuffix("/"+h.Name, "/")
		data, _ := io.ReadAll(tr)
		if name != f.Path || h.Uid != f.UID || h.Gid != f.GID || h.FileInfo().Mode().Perm() != f.Mode.Perm() ||
			(h.FileInfo().Mode()&fs.ModeSticky != 0) != (f.Mode&fs.ModeSticky != 0) ||
			(h.Typeflag == tar.TypeDir) != f.Dir || !bytes.Equal(data, f.Data) || !h.ModTime.Equal(testMeta.Created) ||
			h.Uname != "" || h.Gname != "" {
			t.Errorf("layer entry %d: %s uid %d gid %d mode %v type %c time %s; want %+v", i, name, h.Uid, h.Gid, h.FileInfo().Mode(), h.Typeflag, h.ModTime, f)
		}
	}
	if i != len(files) {
		t.Errorf("layer holds %d entries, want %d", i, len(files))
	}

	// Docker's manifest.json points at the same blobs.
	var docker []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	mustJSON(t, entries["manifest.json"], &docker)
	if len(docker) != 1 || docker[0].Config != "blobs/sha256/"+strings.TrimPrefix(manifest.Config.Digest, "sha256:") ||
		len(docker[0].Layers) != 1 || docker[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(manifest.Layers[0].Digest, "sha256:") ||
		len(docker[0].RepoTags) != 1 || docker[0].RepoTags[0] != "cdcbridge:1.2.3" {
		t.Errorf("manifest.json = %s", entries["manifest.json"])
	}
}

func TestTagSafe(t *testing.T) {
	for in, want := range map[string]string{
		"v1.4.0": "v1.4.0", "v1.4.0-3-gabc123-dirty": "v1.4.0-3-gabc123-dirty", "feature/x+y": "feature-x-y",
		"-x": "x", "": "dev", strings.Repeat("a", 200): strings.Repeat("a", 128),
	} {
		if got := tagSafe(in); got != want {
			t.Errorf("tagSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInspectRefusesDynamicBinaries(t *testing.T) {
	if _, err := Inspect([]byte("#!/bin/sh\n")); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("a script: %v", err)
	}
	// /bin/sh on any Debian machine is dynamically linked.
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(sh); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("/bin/sh: %v", err)
	}
}

func readTar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = data
	}
}

func mustJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestWriteTree writes the tree the Dockerfile copies and finds on disk
// exactly the image's files, owners and modes.
func TestWriteTree(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "root", fmt.Errorf("setting owners needs root (euid %d)", os.Geteuid()))
	}
	files := Files([]byte("binary"), []byte("certs"))
	root := filepath.Join(t.TempDir(), "rootfs")
	if err := WriteTree(root, files); err != nil {
		t.Fatal(err)
	}
	want := map[string]File{}
	for _, f := range files {
		want[f.Path] = f
	}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		name := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
		f, ok := want[name]
		if !ok {
			t.Errorf("unexpected %s", name)
			return nil
		}
		delete(want, name)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		mode := info.Mode() & (fs.ModePerm | fs.ModeSticky)
		if int(st.Uid) != f.UID || int(st.Gid) != f.GID || mode != f.Mode || info.IsDir() != f.Dir {
			t.Errorf("%s: uid %d gid %d mode %v dir %v; want %+v", name, st.Uid, st.Gid, mode, info.IsDir(), f)
		}
		if !f.Dir {
			if data, _ := os.ReadFile(p); !bytes.Equal(data, f.Data) {
				t.Errorf("%s holds %q, want %q", name, data, f.Data)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range want {
		t.Errorf("%s was not written", name)
	}
}

// TestDockerfileMatchesImage holds the Dockerfile to what `make image`
// builds: its last stage is the tree mkimage writes, with the same user,
// entrypoint, working directory, port and stop signal as the image config.
func TestDockerfileMatchesImage(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	last := text[strings.LastIndex(text, "\nFROM ")+1:]
	build := text[:len(text)-len(last)]
	for _, want := range []string{"CGO_ENABLED=0 go build -trimpath", "-X main.version=${VERSION}", "go run ./tools/image/cmd/mkimage -binary /out/cdcbridge -tree /rootfs"} {
		if !strings.Contains(build, want) {
			t.Errorf("the build stage lacks %q", want)
		}
	}
	var cfg Config
	var buf bytes.Buffer
	if _, err := Write(&buf, Files(nil, nil), testMeta); err != nil {
		t.Fatal(err)
	}
	entries := readTar(t, buf.Bytes())
	var docker []struct{ Config string }
	mustJSON(t, entries["manifest.json"], &docker)
	mustJSON(t, entries[docker[0].Config], &cfg)
	entrypoint, _ := json.Marshal(cfg.Config.Entrypoint)
	port := strings.TrimSuffix(MetricPort, "/tcp")
	for _, want := range []string{
		"FROM scratch\n", "COPY --from=build /rootfs/ /\n", "USER " + cfg.Config.User + "\n", "WORKDIR " + cfg.Config.WorkingDir + "\n",
		"EXPOSE " + port + "\n", "STOPSIGNAL " + cfg.Config.StopSignal + "\n", "ENTRYPOINT " + strings.ReplaceAll(string(entrypoint), ",", ", ") + "\n",
	} {
		if !strings.Contains(last, want) {
			t.Errorf("the Dockerfile's last stage lacks %q:\n%s", strings.TrimSpace(want), last)
		}
	}
	for _, line := range strings.Split(last, "\n") {
		if strings.HasPrefix(line, "RUN ") || strings.HasPrefix(line, "ADD ") {
			t.Errorf("the last stage adds files mkimage does not write: %s", line)
		}
	}
}
