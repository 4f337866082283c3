package deploy

import (
	"go/ast"
	"math"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/tools/image"
)

// What the image runs as, and the daemon's in-flight default.
const (
	imageUID          = image.UID
	peakRSSTarget     = 150 << 20 // bytes; the design's bound with the default budget
	goMemLimitPercent = 90        // cmd/cdcbridge sets GOMEMLIMIT to 90% of the cgroup limit
)

// k8sObject is one manifest with where it came from.
type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string { return str(o.doc["kind"]) }
func (o k8sObject) name() string { return str(dig(o.doc, "metadata", "name")) }

// example is one directory under deploy/kubernetes.
type example struct {
	dir     string
	objects []k8sObject
	images  map[string]string // image name -> newName:newTag
}

func (e *example) find(kind, name string) *k8sObject {
	for i := range e.objects {
		if e.objects[i].kind() == kind && e.objects[i].name() == name {
			return &e.objects[i]
		}
	}
	return nil
}

func (e *example) all(kind string) []k8sObject {
	var out []k8sObject
	for _, o := range e.objects {
		if o.kind() == kind {
			out = append(out, o)
		}
	}
	return out
}

var apiVersions = map[string]string{
	"ConfigMap":             "v1",
	"Secret":                "v1",
	"Service":               "v1",
	"ServiceAccount":        "v1",
	"PersistentVolumeClaim": "v1",
	"Deployment":            "apps/v1",
	"StatefulSet":           "apps/v1",
	"PodDisruptionBudget":   "policy/v1",
	"PodMonitor":            "monitoring.coreos.com/v1",
	"ServiceMonitor":        "monitoring.coreos.com/v1",
}

var dns1123 = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// loadExample reads a kustomization and the manifests it lists.
func loadExample(t *testing.T, dir string) *example {
	t.Helper()
	kz := readYAML(t, filepath.Join(dir, "kustomization.yaml"))
	if len(kz) != 1 {
		t.Fatalf("%s/kustomization.yaml: want one document", dir)
	}
	k := obj(kz[0])
	if str(k["kind"]) != "Kustomization" || str(k["apiVersion"]) != "kustomize.config.k8s.io/v1beta1" {
		t.Errorf("%s/kustomization.yaml: not a kustomize.config.k8s.io/v1beta1 Kustomization", dir)
	}
	e := &example{dir: dir, images: map[string]string{}}
	listed := map[string]bool{}
	for _, r := range list(k["resources"]) {
		file := str(r)
		listed[file] = true
		for i, d := range readYAML(t, filepath.Join(dir, file)) {
			m := obj(d)
			if m == nil {
				t.Errorf("%s/%s: document %d is not a mapping", dir, file, i+1)
				continue
			}
			e.objects = append(e.objects, k8sObject{file: dir + "/" + file, doc: m})
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if n := en.Name(); strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && !listed[n] {
			t.Errorf("%s/%s is not listed in kustomization.yaml", dir, n)
		}
	}
	for _, im := range list(k["images"]) {
		name, newName, tag := str(dig(im, "name")), str(dig(im, "newName")), str(dig(im, "newTag"))
		if tag == "" || tag == "latest" {
			t.Errorf("%s/kustomization.yaml: image %s needs a pinned newTag", dir, name)
		}
		e.images[name] = newName + ":" + tag
	}
	if _, ok := e.images["cdcbridge"]; !ok {
		t.Errorf("%s/kustomization.yaml: no images entry for cdcbridge", dir)
	}
	return e
}

func TestKubernetesManifests(t *testing.T) {
	vars := configVariables(t)
	dirs, err := filepath.Glob(filepath.Join("kubernetes", "*", "kustomization.yaml"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no kustomizations under deploy/kubernetes (%v)", err)
	}
	// What the examples must show between them.
	var sawSidecarDeployment, sawPostgresStandby, sawDynamoDBLeases, sawPDB, sawMonitor bool
	for _, kz := range dirs {
		dir := filepath.Dir(kz)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			e := loadExample(t, dir)
			checkObjects(t, e)
			for _, w := range append(e.all("Deployment"), e.all("StatefulSet")...) {
				r := checkWorkload(t, e, w, vars)
				sawSidecarDeployment = sawSidecarDeployment || (w.kind() == "Deployment" && r.containers > 1)
				sawPostgresStandby = sawPostgresStandby || (r.source == "postgres" && r.replicas >= 2)
				sawDynamoDBLeases = sawDynamoDBLeases || (r.source == "dynamodb" && r.replicas >= 2)
				sawPDB = sawPDB || r.pdb
				sawMonitor = sawMonitor || r.monitored
			}
		})
	}
	for what, ok := range map[string]bool{
		"a Deployment with cdcbridge as a sidecar":         sawSidecarDeployment,
		"two replicas in Postgres standby mode":            sawPostgresStandby,
		"two replicas in DynamoDB lease mode":              sawDynamoDBLeases,
		"a PodDisruptionBudget covering a workload":        sawPDB,
		"a PodMonitor or ServiceMonitor scraping /metrics": sawMonitor,
	} {
		if !ok {
			t.Errorf("no example shows %s", what)
		}
	}
}

// checkObjects checks what every manifest needs.
func checkObjects(t *testing.T, e *example) {
	seen := map[string]string{}
	for _, o := range e.objects {
		want, known := apiVersions[o.kind()]
		switch {
		case !known:
			t.Errorf("%s: kind %q is not one these tests know", o.file, o.kind())
		case str(o.doc["apiVersion"]) != want:
			t.Errorf("%s: %s has apiVersion %q, want %q", o.file, o.kind(), o.doc["apiVersion"], want)
		}
		if !dns1123.MatchString(o.name()) || len(o.name()) > 63 {
			t.Errorf("%s: %s name %q is not a DNS label", o.file, o.kind(), o.name())
		}
		if ns := dig(o.doc, "metadata", "namespace"); ns != nil {
			t.Errorf("%s: %s/%s sets a namespace; leave it to kubectl -n or the kustomization", o.file, o.kind(), o.name())
		}
		id := o.kind() + "/" + o.name()
		if prev, dup := seen[id]; dup {
			t.Errorf("%s: %s is also defined in %s", o.file, id, prev)
		}
		seen[id] = o.file
		switch o.kind() {
		case "ConfigMap":
			for k, v := range obj(o.doc["data"]) {
				if _, ok := v.(string); !ok {
					t.Errorf("%s: ConfigMap data %s is %T, want a string (quote it)", o.file, k, v)
				}
				if k == "CDCBRIDGE_POSTGRES_URL" {
					t.Errorf("%s: CDCBRIDGE_POSTGRES_URL holds a password: keep it in a Secret", o.file)
				}
			}
		case "Secret":
			for k, v := range obj(o.doc["stringData"]) {
				if _, ok := v.(string); !ok {
					t.Errorf("%s: Secret stringData %s is %T, want a string", o.file, k, v)
				}
			}
		}
	}
}

// workloadReport is what one workload showed.
type workloadReport struct {
	source     string
	replicas   int64
	containers int
	pdb        bool
	monitored  bool
}

func checkWorkload(t *testing.T, e *example, w k8sObject, vars map[string]configVariable) workloadReport {
	where := w.file + " " + w.kind() + "/" + w.name()
	spec := obj(w.doc["spec"])
	pod := obj(dig(spec, "template", "spec"))
	podLabels := obj(dig(spec, "template", "metadata", "labels"))
	rep := workloadReport{replicas: 1, containers: len(list(pod["containers"]))}
	if n, ok := spec["replicas"].(int64); ok {
		rep.replicas = n
	}
	if sel := obj(dig(spec, "selector", "matchLabels")); len(sel) == 0 || !labelsMatch(sel, podLabels) {
		t.Errorf("%s: spec.selector.matchLabels %v does not select the pod template's labels %v", where, sel, podLabels)
	}

	var c map[string]any
	for _, x := range list(pod["containers"]) {
		if str(dig(x, "name")) == "cdcbridge" {
			c = obj(x)
		}
	}
	if c == nil {
		t.Errorf("%s: no container named cdcbridge", where)
		return rep
	}
	if img := str(c["image"]); img != "cdcbridge" {
		t.Errorf("%s: cdcbridge image %q, want \"cdcbridge\" (set by the kustomization's images)", where, img)
	}
	if args := list(c["args"]); len(args) > 0 && !(len(args) == 1 && args[0] == "run") {
		t.Errorf("%s: cdcbridge args %v, want [run]", where, args)
	}
	if sa := str(pod["serviceAccountName"]); sa == "" || e.find("ServiceAccount", sa) == nil {
		t.Errorf("%s: serviceAccountName %q is not defined in %s", where, sa, e.dir)
	}

	env := containerEnv(t, e, where, c)
	for k := range env {
		if strings.HasPrefix(k, "CDCBRIDGE_") {
			if _, ok := vars[k]; !ok {
				t.Errorf("%s: sets %s, which cmd/cdcbridge does not read", where, k)
			}
		}
	}
	get := func(name string) string {
		if v, ok := env[name]; ok && v != "" {
			return v
		}
		return vars[name].Default
	}
	rep.source = get("CDCBRIDGE_SOURCE")
	switch rep.source {
	case "postgres":
		if env["CDCBRIDGE_POSTGRES_URL"] == "" {
			t.Errorf("%s: postgres source without CDCBRIDGE_POSTGRES_URL", where)
		}
	case "dynamodb":
		if (env["CDCBRIDGE_DYNAMODB_TABLE"] == "") == (env["CDCBRIDGE_DYNAMODB_STREAM_ARN"] == "") {
			t.Errorf("%s: dynamodb source needs exactly one of CDCBRIDGE_DYNAMODB_TABLE and CDCBRIDGE_DYNAMODB_STREAM_ARN", where)
		}
	default:
		t.Errorf("%s: CDCBRIDGE_SOURCE %q, want postgres or dynamodb", where, rep.source)
	}
	if env["CDCBRIDGE_KINESIS_STREAM"] == "" {
		t.Errorf("%s: no CDCBRIDGE_KINESIS_STREAM", where)
	}
	if env["AWS_REGION"] == "" && !strings.HasPrefix(env["CDCBRIDGE_KINESIS_STREAM"], "arn:") {
		t.Errorf("%s: no AWS_REGION", where)
	}

	// Port, probes and the monitor.
	httpPort := portOf(get("CDCBRIDGE_HTTP_ADDR"))
	var portName string
	for _, p := range list(c["ports"]) {
		if n, _ := dig(p, "containerPort").(int64); int(n) == httpPort {
			portName = str(dig(p, "name"))
		}
	}
	if portName == "" || len(portName) > 15 {
		t.Errorf("%s: cdcbridge needs a named container port (at most 15 characters) for %d, the port of CDCBRIDGE_HTTP_ADDR", where, httpPort)
	}
	for probe, want := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		p := obj(c[probe])
		if got := str(dig(p, "httpGet", "path")); got != want {
			t.Errorf("%s: %s path %q, want %q", where, probe, got, want)
		}
		if port := dig(p, "httpGet", "port"); port != portName && port != int64(httpPort) {
			t.Errorf("%s: %s port %v, want %s", where, probe, port, portName)
		}
	}
	// /healthz already waits minutes before it reports a stall; the probe
	// must not add a hair trigger (period x threshold at least 30s).
	period, threshold := intOr(dig(c, "livenessProbe", "periodSeconds"), 10), intOr(dig(c, "livenessProbe", "failureThreshold"), 3)
	if period*threshold < 30 {
		t.Errorf("%s: liveness fails after %ds; give it at least 30s", where, period*threshold)
	}

	// Resources and GOMEMLIMIT.
	res := obj(c["resources"])
	reqCPU, reqMem := quantity(t, where, dig(res, "requests", "cpu")), quantity(t, where, dig(res, "requests", "memory"))
	limCPU, limMem := quantity(t, where, dig(res, "limits", "cpu")), quantity(t, where, dig(res, "limits", "memory"))
	if reqCPU <= 0 || reqMem <= 0 || limCPU <= 0 || limMem <= 0 {
		t.Errorf("%s: cdcbridge needs cpu and memory requests and limits", where)
	} else {
		if reqCPU > limCPU || reqMem > limMem {
			t.Errorf("%s: requests exceed limits", where)
		}
		budget := quantity(t, where, get("CDCBRIDGE_MAX_INFLIGHT_BYTES"))
		if reqMem < budget {
			t.Errorf("%s: memory request %v below the in-flight budget %v", where, reqMem, budget)
		}
		goLimit := limMem * goMemLimitPercent / 100
		if _, ok := env["GOMEMLIMIT"]; !ok && !derivesMemoryLimit(t) {
			t.Errorf("%s: GOMEMLIMIT is left to cdcbridge, but cmd/cdcbridge no longer derives it from the cgroup limit", where)
		}
		if v, ok := env["GOMEMLIMIT"]; ok {
			goLimit = quantity(t, where, v) // 230MiB, 241172480, ...
			if goLimit >= limMem {
				t.Errorf("%s: GOMEMLIMIT %s is not below the memory limit", where, v)
			}
		}
		if goLimit < peakRSSTarget {
			t.Errorf("%s: the Go memory limit (%.0f MiB) is below the %d MiB peak RSS the daemon is built for", where, goLimit/(1<<20), peakRSSTarget>>20)
		}
	}

	// Security.
	psc, csc := obj(pod["securityContext"]), obj(c["securityContext"])
	pick := func(k string) any {
		if v, ok := csc[k]; ok {
			return v
		}
		return psc[k]
	}
	if pick("runAsNonRoot") != true {
		t.Errorf("%s: cdcbridge needs runAsNonRoot: true", where)
	}
	if uid, ok := pick("runAsUser").(int64); ok && uid == 0 {
		t.Errorf("%s: cdcbridge runs as root", where)
	} else if ok && uid != imageUID {
		t.Errorf("%s: runAsUser %d, but the image's user is nonroot (%d)", where, uid, imageUID)
	}
	if csc["allowPrivilegeEscalation"] != false {
		t.Errorf("%s: cdcbridge needs allowPrivilegeEscalation: false", where)
	}
	if csc["readOnlyRootFilesystem"] != true {
		t.Errorf("%s: cdcbridge needs readOnlyRootFilesystem: true", where)
	}
	if csc["privileged"] == true {
		t.Errorf("%s: cdcbridge is privileged", where)
	}
	if drop := list(dig(csc, "capabilities", "drop")); !containsAny(drop, "ALL") {
		t.Errorf("%s: cdcbridge should drop ALL capabilities", where)
	}
	if str(dig(pick("seccompProfile"), "type")) != "RuntimeDefault" {
		t.Errorf("%s: want seccompProfile RuntimeDefault", where)
	}
	if fsg, _ := psc["fsGroup"].(int64); fsg != imageUID {
		t.Errorf("%s: pod fsGroup %d, want %d so the volume is writable by the image's user", where, fsg, imageUID)
	}

	// Where cdcbridge writes must be on a persistent volume: the root
	// file system is read-only, and an emptyDir would lose dead-lettered
	// events with the pod.
	persistent := persistentMounts(t, e, w, c)
	var written []string
	store := get("CDCBRIDGE_CHECKPOINT_STORE")
	if p, ok := strings.CutPrefix(store, "file://"); ok {
		written = append(written, path.Dir(p))
		if rep.replicas > 1 {
			t.Errorf("%s: %d replicas with a file checkpoint store: each would keep its own; use dynamodb://TABLE", where, rep.replicas)
		}
	}
	if get("CDCBRIDGE_OVERSIZE") == "dlq" {
		written = append(written, get("CDCBRIDGE_DLQ_DIR"))
	}
	for _, dir := range written {
		if !underAny(dir, persistent) {
			t.Errorf("%s: cdcbridge writes %s, which is not on a persistent volume (mounted: %v)", where, dir, persistent)
		}
	}
	if w.kind() == "Deployment" && len(persistent) > 0 {
		if rep.replicas > 1 {
			t.Errorf("%s: a Deployment with %d replicas would share one claim; use a StatefulSet with volumeClaimTemplates", where, rep.replicas)
		}
		if str(dig(spec, "strategy", "type")) != "Recreate" {
			t.Errorf("%s: a ReadWriteOnce claim needs strategy Recreate, or the new pod waits for the old one's volume", where)
		}
	}
	shutdown, err := time.ParseDuration(get("CDCBRIDGE_SHUTDOWN_TIMEOUT"))
	if err != nil {
		t.Errorf("%s: CDCBRIDGE_SHUTDOWN_TIMEOUT: %v", where, err)
	}
	if grace := intOr(pod["terminationGracePeriodSeconds"], 30); time.Duration(grace)*time.Second <= shutdown {
		t.Errorf("%s: terminationGracePeriodSeconds %d does not leave CDCBRIDGE_SHUTDOWN_TIMEOUT (%v) to flush", where, grace, shutdown)
	}
	if w.kind() == "StatefulSet" {
		svc := e.find("Service", str(spec["serviceName"]))
		if svc == nil || dig(svc.doc, "spec", "clusterIP") != "None" {
			t.Errorf("%s: serviceName %q is not a headless Service of the example", where, spec["serviceName"])
		}
	}

	// Objects that select the pods.
	for _, s := range e.all("Service") {
		sel := obj(dig(s.doc, "spec", "selector"))
		if !labelsMatch(sel, podLabels) {
			continue
		}
		for _, p := range list(dig(s.doc, "spec", "ports")) {
			if tp, ok := dig(p, "targetPort").(string); ok && !hasPortName(pod, tp) {
				t.Errorf("%s: Service %s targets port %q, which no container names", s.file, s.name(), tp)
			}
		}
	}
	for _, m := range append(e.all("PodMonitor"), e.all("ServiceMonitor")...) {
		if !labelsMatch(obj(dig(m.doc, "spec", "selector", "matchLabels")), podLabels) {
			continue
		}
		key := "podMetricsEndpoints"
		if m.kind() == "ServiceMonitor" {
			key = "endpoints"
		}
		for _, ep := range list(dig(m.doc, "spec", key)) {
			if str(dig(ep, "port")) == portName && str(dig(ep, "path")) == "/metrics" {
				rep.monitored = true
			}
		}
	}
	if !rep.monitored {
		t.Errorf("%s: no PodMonitor scrapes /metrics on port %s of these pods", where, portName)
	}
	for _, p := range e.all("PodDisruptionBudget") {
		if !labelsMatch(obj(dig(p.doc, "spec", "selector", "matchLabels")), podLabels) {
			continue
		}
		rep.pdb = true
		maxU, hasMax := dig(p.doc, "spec", "maxUnavailable").(int64)
		minA, hasMin := dig(p.doc, "spec", "minAvailable").(int64)
		switch {
		case hasMax == hasMin:
			t.Errorf("%s: set exactly one of maxUnavailable and minAvailable (as a number)", p.file)
		case hasMax && maxU < 1, hasMin && minA >= rep.replicas:
			t.Errorf("%s: the budget allows no voluntary eviction of %d replicas: node drains would hang", p.file, rep.replicas)
		case hasMin && minA < 1, hasMax && maxU >= rep.replicas:
			t.Errorf("%s: the budget lets every replica go at once", p.file)
		}
	}
	if rep.replicas > 1 && !rep.pdb {
		t.Errorf("%s: %d replicas without a PodDisruptionBudget", where, rep.replicas)
	}
	return rep
}

// containerEnv merges a container's envFrom and env, checking that every
// referenced ConfigMap and Secret is part of the example.
func containerEnv(t *testing.T, e *example, where string, c map[string]any) map[string]string {
	env := map[string]string{}
	for _, from := range list(c["envFrom"]) {
		if name := str(dig(from, "configMapRef", "name")); name != "" {
			cm := e.find("ConfigMap", name)
			if cm == nil {
				t.Errorf("%s: envFrom ConfigMap %q is not in %s", where, name, e.dir)
				continue
			}
			for k, v := range obj(cm.doc["data"]) {
				env[k] = str(v)
			}
		}
		if name := str(dig(from, "secretRef", "name")); name != "" {
			s := e.find("Secret", name)
			if s == nil {
				t.Errorf("%s: envFrom Secret %q is not in %s", where, name, e.dir)
				continue
			}
			for k, v := range obj(s.doc["stringData"]) {
				env[k] = str(v)
			}
			for k := range obj(s.doc["data"]) {
				env[k] = "(secret)"
			}
		}
	}
	for _, v := range list(c["env"]) {
		env[str(dig(v, "name"))] = str(dig(v, "value"))
	}
	return env
}

// persistentMounts returns the cdcbridge container's mount paths whose
// volume is a claim of the example or a claim template.
func persistentMounts(t *testing.T, e *example, w k8sObject, c map[string]any) []string {
	claims := map[string]bool{}
	for _, v := range list(dig(w.doc, "spec", "template", "spec", "volumes")) {
		name := str(dig(v, "name"))
		if dig(v, "emptyDir") != nil {
			continue
		}
		if cn := str(dig(v, "persistentVolumeClaim", "claimName")); cn != "" {
			if e.find("PersistentVolumeClaim", cn) == nil {
				t.Errorf("%s: volume %s claims %q, which is not in %s", w.file, name, cn, e.dir)
			}
			claims[name] = true
		}
	}
	for _, tpl := range list(dig(w.doc, "spec", "volumeClaimTemplates")) {
		claims[str(dig(tpl, "metadata", "name"))] = true
	}
	var out []string
	for _, m := range list(c["volumeMounts"]) {
		if claims[str(dig(m, "name"))] && dig(m, "readOnly") != true {
			out = append(out, str(dig(m, "mountPath")))
		}
	}
	return out
}

func underAny(dir string, mounts []string) bool {
	for _, m := range mounts {
		if dir == m || strings.HasPrefix(dir, strings.TrimSuffix(m, "/")+"/") {
			return true
		}
	}
	return false
}

func labelsMatch(sel, labels map[string]any) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func hasPortName(pod map[string]any, name string) bool {
	for _, c := range list(pod["containers"]) {
		for _, p := range list(dig(c, "ports")) {
			if str(dig(p, "name")) == name {
				return true
			}
		}
	}
	return false
}

func containsAny(l []any, v string) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

func intOr(v any, def int) int {
	if n, ok := v.(int64); ok {
		return int(n)
	}
	return def
}

func portOf(addr string) int {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// quantity parses a Kubernetes quantity ("100m", "256Mi", "1") or a
// cdcbridge size ("64MiB"): CPU in cores, memory in bytes.
func quantity(t *testing.T, where string, v any) float64 {
	t.Helper()
	var s string
	switch x := v.(type) {
	case nil:
		return 0
	case int64:
		return float64(x)
	case float64:
		return x
	case string:
		s = strings.TrimSuffix(x, "B")
	default:
		t.Errorf("%s: quantity %v has type %T", where, v, v)
		return 0
	}
	mult := 1.0
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"m", 1e-3}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(n) {
		t.Errorf("%s: bad quantity %q", where, v)
		return 0
	}
	return n * mult
}

// TestKubernetesKustomize renders every example with kubectl's own
// kustomize, when kubectl is installed, and checks that its YAML reader
// reads the same objects as the tests' reader (so the subset reader cannot
// quietly disagree with Kubernetes), with the images set.
func TestKubernetesKustomize(t *testing.T) {
	kubectl := tool("kubectl")
	if kubectl == "" {
		t.Log("kubectl not installed: the manifests were checked by the Go reader only (TestKubernetesManifests)")
		return
	}
	dirs, _ := filepath.Glob(filepath.Join("kubernetes", "*", "kustomization.yaml"))
	for _, kz := range dirs {
		dir := filepath.Dir(kz)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			cmd := exec.Command(kubectl, "kustomize", dir)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
			}
			rendered, err := parseYAML("kubectl kustomize "+dir, string(out))
			if err != nil {
				t.Fatal(err)
			}
			e := loadExample(t, dir)
			if len(rendered) != len(e.objects) {
				t.Errorf("kustomize rendered %d objects, the reader read %d", len(rendered), len(e.objects))
			}
			for _, r := range rendered {
				ro := k8sObject{doc: obj(r)}
				mine := e.find(ro.kind(), ro.name())
				if mine == nil {
					t.Errorf("kustomize rendered %s/%s, which the reader did not read", ro.kind(), ro.name())
					continue
				}
				want := withImages(mine.doc, e.images)
				if diff := cmp.Diff(want, ro.doc); diff != "" {
					t.Errorf("%s/%s: kustomize and the reader differ (-reader +kustomize):\n%s", ro.kind(), ro.name(), diff)
				}
			}
			t.Logf("kubectl kustomize %s: %d objects, same as the reader", dir, len(rendered))
		})
	}
}

// withImages returns a copy of doc with container images replaced as the
// kustomization's images entries do.
func withImages(doc map[string]any, images map[string]string) map[string]any {
	var cp func(v any) any
	cp = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			m := make(map[string]any, len(x))
			for k, v := range x {
				m[k] = cp(v)
			}
			if img, ok := m["image"].(string); ok {
				if repl, ok := images[img]; ok {
					m["image"] = repl
				}
			}
			return m
		case []any:
			s := make([]any, len(x))
			for i, v := range x {
				s[i] = cp(v)
			}
			return s
		}
		return v
	}
	return cp(doc).(map[string]any)
}

// derivesMemoryLimit reports whether cmd/cdcbridge still sets the Go memory
// limit from the cgroup's when GOMEMLIMIT is unset, as the manifests and
// deploy/README.md say.
func derivesMemoryLimit(t *testing.T) bool {
	t.Helper()
	var env, cgroup, set bool
	for _, f := range goSources(t, "cmd/cdcbridge") {
		ast.Inspect(f.file, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.BasicLit:
				env = env || x.Value == `"GOMEMLIMIT"`
				cgroup = cgroup || x.Value == `"/sys/fs/cgroup/memory.max"`
			case *ast.SelectorExpr:
				set = set || x.Sel.Name == "SetMemoryLimit"
			}
			return true
		})
	}
	return env && cgroup && set
}
