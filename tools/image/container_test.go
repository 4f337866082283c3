package image

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/cdc"
	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

// TestImageRunsAsSidecar builds the image from a static binary the way
// `make image` does, has skopeo read it in both archive formats, unpacks
// it with umoci and runs it with runc (the OCI runtime under containerd
// and Kubernetes) as the image says: the non-root user, its entrypoint,
// plus what the Kubernetes manifests add: a read-only root file system
// and a volume at the state directory. The container streams PostgreSQL
// changes to kinesalite, then stops on SIGTERM with status 0, leaving its
// checkpoint in the volume.
func TestImageRunsAsSidecar(t *testing.T) {
	skopeo, umoci, runc := testenv.Tool(t, "skopeo"), testenv.Tool(t, "umoci"), testenv.Tool(t, "runc")
	if os.Geteuid() != 0 {
		testenv.Unavailable(t, "runc", fmt.Errorf("running containers needs root (euid %d)", os.Geteuid()))
	}
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	work := t.TempDir()
	// runc and umoci need every directory above the bundle to be
	// traversable by the container's user.
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}

	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	version := testenv.UniqueName("v0.0.0-image")
	binPath := filepath.Join(work, "cdcbridge")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", binPath, "./cmd/cdcbridge")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	arch, err := Inspect(bin)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := os.ReadFile(CACerts)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(work, "image.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	built, err := Write(f, Files(bin, certs), Meta{Version: version, Revision: "test", Created: time.Unix(0, 0), Arch: arch})
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %s: layer %d bytes compressed, %d unpacked", built.Tag, built.Digest, built.LayerSize, built.TreeSize)

	// skopeo reads both formats the archive carries.
	run := func(name string, args ...string) []byte {
		t.Helper()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return out
	}
	var oci struct {
		Digest       string
		Architecture string
		Labels       map[string]string
	}
	if err := json.Unmarshal(run(skopeo, "inspect", "oci-archive:"+archive), &oci); err != nil {
		t.Fatal(err)
	}
	if oci.Digest != built.Digest || oci.Architecture != arch || oci.Labels["org.opencontainers.image.version"] != version {
		t.Errorf("skopeo inspect oci-archive: %+v; built %s", oci, built.Digest)
	}
	var dockerCfg Config
	if err := json.Unmarshal(run(skopeo, "inspect", "--config", "docker-archive:"+archive), &dockerCfg); err != nil {
		t.Fatal(err)
	}
	if dockerCfg.Config.User != "65532:65532" || len(dockerCfg.Config.Entrypoint) != 1 || dockerCfg.Config.Entrypoint[0] != Binary {
		t.Errorf("skopeo inspect --config docker-archive: %+v", dockerCfg.Config)
	}

	// Unpack into an OCI runtime bundle; umoci takes a layout directory.
	layout, bundle := filepath.Join(work, "layout"), filepath.Join(work, "bundle")
	run("tar", "-xf", archive, "-C", mkdir(t, layout))
	run(umoci, "unpack", "--image", layout+":"+strings.TrimPrefix(built.Tag, "cdcbridge:"), bundle)

	// What the Deployment adds: the volume, the read-only root, the
	// settings. The pod's network is the host's here, where the servers are.
	state := mkdir(t, filepath.Join(work, "state"))
	if err := os.Chown(state, UID, GID); err != nil { // a new volume takes the directory's owner
		t.Fatal(err)
	}
	dbName, stream, slot := testenv.UniqueName("image"), testenv.UniqueName("image"), testenv.UniqueName("image")
	if err := pg.CreateDatabase(ctx, dbName); err != nil {
		t.Fatal(err)
	}
	if err := kin.CreateStream(ctx, stream, 1); err != nil {
		t.Fatal(err)
	}
	db, err := pgx.Connect(ctx, pg.URL(dbName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	if _, err := db.Exec(ctx, `CREATE TABLE items (id int PRIMARY KEY, note text)`); err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	var spec map[string]any
	specPath := filepath.Join(bundle, "config.json")
	specData, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	mustJSON(t, specData, &spec)
	proc := spec["process"].(map[string]any)
	user := proc["user"].(map[string]any)
	if user["uid"] != float64(UID) || user["gid"] != float64(GID) {
		t.Fatalf("the image runs as %v, want %d:%d", user, UID, GID)
	}
	if args := fmt.Sprint(proc["args"]); args != "["+Binary+"]" {
		t.Errorf("the image runs %s, want %s", args, Binary)
	}
	proc["terminal"] = false
	env, _ := proc["env"].([]any)
	for _, kv := range []string{
		"CDCBRIDGE_SOURCE=postgres", "CDCBRIDGE_POSTGRES_URL=" + pg.URL(dbName), "CDCBRIDGE_POSTGRES_SLOT=" + slot,
		"CDCBRIDGE_KINESIS_STREAM=" + stream, "CDCBRIDGE_HTTP_ADDR=" + httpAddr, "CDCBRIDGE_SHUTDOWN_TIMEOUT=10s",
		"AWS_ENDPOINT_URL_KINESIS=" + kin.Endpoint, "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test", "AWS_EC2_METADATA_DISABLED=true",
	} {
		env = append(env, kv)
	}
	proc["env"] = env
	spec["root"].(map[string]any)["readonly"] = true
	spec["mounts"] = append(spec["mounts"].([]any), map[string]any{
		"destination": StateDir, "type": "bind", "source": state, "options": []string{"rbind", "rw"}})
	linux := spec["linux"].(map[string]any)
	var nss []any
	for _, ns := range linux["namespaces"].([]any) {
		if ns.(map[string]any)["type"] != "network" {
			nss = append(nss, ns)
		}
	}
	linux["namespaces"] = nss
	if specData, err = json.Marshal(spec); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(specPath, specData, 0o644); err != nil {
		t.Fatal(err)
	}

	id := testenv.UniqueName("cdcbridge")
	var out bytes.Buffer
	ctr := exec.Command(runc, "run", "--bundle", bundle, id)
	ctr.Stdout, ctr.Stderr = &out, &out
	if err := ctr.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- ctr.Wait() }()
	t.Cleanup(func() {
		_ = exec.Command(runc, "delete", "--force", id).Run()
	})

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(90 * time.Second); !ok(); {
			select {
			case err := <-exited:
				t.Fatalf("the container exited (%v) before %s:\n%s", err, what, out.String())
			case <-time.After(300 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s after 90 s:\n%s", what, out.String())
			}
		}
	}
	waitFor("readiness", func() bool {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, err := db.Exec(ctx, `INSERT INTO items SELECT g, 'from the container' FROM generate_series(1, 20) g`); err != nil {
		t.Fatal(err)
	}
	var first map[string]*cdc.Event
	waitFor("20 events on the stream", func() bool {
		recs, err := verify.ReadAll(ctx, kin.Client(), stream)
		if err != nil {
			t.Fatal(err)
		}
		var rep verify.Report
		rep, first = verify.Check(recs)
		if rep.Invalid > 0 || len(rep.OrderViolations) > 0 {
			t.Fatalf("stream check: %+v", rep)
		}
		return len(first) >= 20
	})
	if len(first) != 20 {
		t.Errorf("%d distinct events, want 20", len(first))
	}

	run(runc, "kill", id, "TERM")
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("after SIGTERM the container exited with %v, want status 0:\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the container did not stop within 30 s of SIGTERM:\n%s", out.String())
	}
	cp, err := os.Stat(filepath.Join(state, "checkpoints.json"))
	if err != nil {
		t.Fatalf("no checkpoint in the volume: %v\n%s", err, out.String())
	}
	if st := cp.Sys().(*syscall.Stat_t); st.Uid != UID {
		t.Errorf("the checkpoint file is owned by uid %d, want %d", st.Uid, UID)
	}
	if !strings.Contains(out.String(), version) {
		t.Errorf("the log does not name the stamped version %s:\n%s", version, out.String())
	}
}

func mkdir(t *testing.T, p string) string {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
