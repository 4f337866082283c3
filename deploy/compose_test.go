package deploy

import (
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const composeFile = "compose.yaml"

// TestComposeFile checks that the Compose file wires a working trial: the
// bridges' variables are ones the daemon reads, their endpoints and URLs
// name services of the file with matching credentials, the streams and
// the table they use are created by the setup service, and they start
// only once their dependencies are ready.
func TestComposeFile(t *testing.T) {
	vars := configVariables(t)
	docs := readYAML(t, composeFile)
	if len(docs) != 1 {
		t.Fatalf("%s: want one document", composeFile)
	}
	services := obj(dig(docs[0], "services"))
	volumes := obj(dig(docs[0], "volumes"))
	if len(services) == 0 {
		t.Fatalf("%s: no services", composeFile)
	}
	envOf := func(name string) map[string]string {
		out := map[string]string{}
		for k, v := range obj(dig(services[name], "environment")) {
			s, ok := v.(string)
			if !ok {
				t.Errorf("%s: service %s: %s is %T; quote it so Compose passes it as written", composeFile, name, k, v)
			}
			out[k] = s
		}
		return out
	}

	// Images are pinned; the bridges are built from the repository.
	for name, s := range services {
		img := str(dig(s, "image"))
		if dig(s, "build") != nil {
			ctx := str(dig(s, "build", "context"))
			if _, err := os.Stat(filepath.Join(filepath.Dir(composeFile), ctx, "Dockerfile")); err != nil {
				t.Errorf("%s: service %s builds %q, which has no Dockerfile", composeFile, name, ctx)
			}
			continue
		}
		if _, tag, ok := strings.Cut(img, ":"); !ok || tag == "latest" {
			t.Errorf("%s: service %s: image %q needs a pinned tag", composeFile, name, img)
		}
	}

	// PostgreSQL runs with wal_level=logical.
	pgService := ""
	for name, s := range services {
		for _, arg := range list(dig(s, "command")) {
			if str(arg) == "wal_level=logical" {
				pgService = name
			}
		}
	}
	if pgService == "" {
		t.Fatalf("%s: no service runs PostgreSQL with -c wal_level=logical", composeFile)
	}
	if dig(services[pgService], "healthcheck", "test") == nil {
		t.Errorf("%s: %s needs a healthcheck for the bridge to wait on", composeFile, pgService)
	}
	pgEnv := envOf(pgService)

	// What the setup service creates.
	setup := ""
	for name, s := range services {
		if strings.Contains(strings.Join(strs(dig(s, "command")), "\n"), "create-stream") {
			setup = name
		}
	}
	script := strings.ReplaceAll(strings.Join(strs(dig(services[setup], "command")), "\n"), "$$", "$")
	streams := map[string]bool{}
	if m := regexp.MustCompile(`for stream in ([a-z0-9 -]+); do`).FindStringSubmatch(script); m != nil {
		for _, s := range strings.Fields(m[1]) {
			streams[s] = true
		}
	}
	tables := map[string]bool{}
	for _, m := range regexp.MustCompile(`create-table --table-name ([A-Za-z0-9_.-]+)`).FindAllStringSubmatch(script, -1) {
		tables[m[1]] = true
	}
	if setup == "" || len(streams) == 0 || len(tables) == 0 || !strings.Contains(script, "StreamEnabled=true") {
		t.Fatalf("%s: no setup service that creates the streams and a table with its stream enabled", composeFile)
	}

	sources := map[string]bool{}
	for _, name := range sortedKeys(services) {
		env := envOf(name)
		src := env["CDCBRIDGE_SOURCE"]
		if src == "" && env["CDCBRIDGE_KINESIS_STREAM"] == "" {
			continue // not a cdcbridge service
		}
		where := composeFile + ": service " + name
		for k := range env {
			if _, ok := vars[k]; strings.HasPrefix(k, "CDCBRIDGE_") && !ok {
				t.Errorf("%s: sets %s, which cmd/cdcbridge does not read", where, k)
			}
		}
		if !streams[env["CDCBRIDGE_KINESIS_STREAM"]] {
			t.Errorf("%s: stream %q is not created by %s", where, env["CDCBRIDGE_KINESIS_STREAM"], setup)
		}
		for k, v := range env {
			if strings.HasPrefix(k, "AWS_ENDPOINT_URL") {
				u, err := url.Parse(v)
				if err != nil || services[u.Hostname()] == nil {
					t.Errorf("%s: %s=%s does not name a service of the file", where, k, v)
				}
			}
		}
		if env["AWS_REGION"] == "" || env["AWS_ACCESS_KEY_ID"] == "" {
			t.Errorf("%s: needs AWS_REGION and (dummy) credentials for the emulators", where)
		}
		if src == "" {
			continue // a tool such as tail
		}
		sources[src] = true
		deps := obj(dig(services[name], "depends_on"))
		if str(dig(deps, setup, "condition")) != "service_completed_successfully" {
			t.Errorf("%s: should wait for %s to complete", where, setup)
		}
		switch src {
		case "postgres":
			u, err := url.Parse(env["CDCBRIDGE_POSTGRES_URL"])
			if err != nil {
				t.Errorf("%s: CDCBRIDGE_POSTGRES_URL: %v", where, err)
				break
			}
			pw, _ := u.User.Password()
			if u.Hostname() != pgService || u.User.Username() != pgEnv["POSTGRES_USER"] || pw != pgEnv["POSTGRES_PASSWORD"] ||
				strings.TrimPrefix(u.Path, "/") != pgEnv["POSTGRES_DB"] {
				t.Errorf("%s: CDCBRIDGE_POSTGRES_URL does not match service %s's user, password and database", where, pgService)
			}
			if str(dig(deps, pgService, "condition")) != "service_healthy" {
				t.Errorf("%s: should wait for %s to be healthy", where, pgService)
			}
		case "dynamodb":
			if !tables[env["CDCBRIDGE_DYNAMODB_TABLE"]] {
				t.Errorf("%s: table %q is not created by %s", where, env["CDCBRIDGE_DYNAMODB_TABLE"], setup)
			}
			if env["AWS_ENDPOINT_URL_DYNAMODB_STREAMS"] == "" || env["AWS_ENDPOINT_URL_DYNAMODB"] == "" {
				t.Errorf("%s: needs AWS_ENDPOINT_URL_DYNAMODB and AWS_ENDPOINT_URL_DYNAMODB_STREAMS", where)
			}
		}
		// Like the Kubernetes manifests: a read-only root and the state on
		// a volume that outlives the container.
		if dig(services[name], "read_only") != true {
			t.Errorf("%s: should run with read_only: true", where)
		}
		var written []string
		if p, ok := strings.CutPrefix(env["CDCBRIDGE_CHECKPOINT_STORE"], "file://"); ok {
			written = append(written, path.Dir(p))
		}
		written = append(written, env["CDCBRIDGE_DLQ_DIR"])
		var mounts []string
		for _, v := range list(dig(services[name], "volumes")) {
			vol, target, _ := strings.Cut(str(v), ":")
			if _, named := volumes[vol]; named {
				mounts = append(mounts, strings.Split(target, ":")[0])
			}
		}
		for _, dir := range written {
			if dir == "" || !underAny(dir, mounts) {
				t.Errorf("%s: writes %q, which is not on a named volume (%v)", where, dir, mounts)
			}
		}
	}
	for _, src := range []string{"postgres", "dynamodb"} {
		if !sources[src] {
			t.Errorf("%s: no cdcbridge service with CDCBRIDGE_SOURCE=%s", composeFile, src)
		}
	}
}

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, str(x))
	}
	return out
}
