package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/token"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// The SDK service packages the code may call, and the prefix of their IAM
// actions (DynamoDB Streams' actions are dynamodb:...).
var sdkServices = map[string]string{
	"kinesis":         "kinesis",
	"dynamodb":        "dynamodb",
	"dynamodbstreams": "dynamodb",
	"sts":             "sts",
}

const sdkServicePrefix = "github.com/aws/aws-sdk-go-v2/service/"

// The X-Amz-Target prefixes of the AWS JSON protocol, for code that sends
// an operation itself instead of through the SDK's method.
var jsonTargetPrefixes = map[string]string{
	"Kinesis_20131202":         "kinesis",
	"DynamoDB_20120810":        "dynamodb",
	"DynamoDBStreams_20120810": "dynamodbstreams",
}

// Operations that need no IAM permission.
var noPermissionNeeded = map[string]bool{
	"sts:GetCallerIdentity": true, // "No permissions are required to perform this operation."
}

// Operations whose IAM action is not their name: the test cannot map them
// and says so, rather than guess.
var unmappedOperations = map[string]bool{
	"dynamodb:ExecuteStatement":      true, // PartiQL: dynamodb:PartiQLSelect/Insert/Update/Delete
	"dynamodb:BatchExecuteStatement": true,
	"dynamodb:ExecuteTransaction":    true,
	"dynamodb:TransactWriteItems":    true, // the item actions it performs
	"dynamodb:TransactGetItems":      true,
}

// sdkCall is one AWS operation the code uses, and where.
type sdkCall struct {
	service, op string // "dynamodbstreams", "GetRecords"
	pos         string // file:line
	file        string // slash path from the repository root
}

func (c sdkCall) action() string { return sdkServices[c.service] + ":" + c.op }

// sdkOperations lists a service package's operations from the SDK source
// in the module cache (one api_op_NAME.go file per operation), at the
// version go.mod selects.
func sdkOperations(t *testing.T, service string) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", strings.TrimSuffix(sdkServicePrefix, "/")+"/"+service)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list -m %s: %v\n%s", service, err, stderr)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("module of service %s is not downloaded (go mod download)", service)
	}
	files, err := filepath.Glob(filepath.Join(dir, "api_op_*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no api_op_*.go files in %s (%v)", dir, err)
	}
	ops := map[string]bool{}
	for _, f := range files {
		ops[strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "api_op_"), ".go")] = true
	}
	return ops
}

// sdkCalls finds the AWS operations the non-test code under dirs uses:
//
//   - a reference to an operation's input type (svc.PutRecordsInput),
//     which every call needs, including calls through waiters, paginators
//     and small interfaces declared by the caller;
//   - an X-Amz-Target string of the AWS JSON protocol
//     ("Kinesis_20131202.PutRecords"), for requests the code signs and
//     sends itself;
//   - a method call named like an operation, with at least the context
//     and input arguments (x.PutRecords(ctx, in)), in a
//     package that imports a service defining it, unless the package
//     declares a method of that name itself (a wrapper, whose own SDK call
//     is found inside it).
//
// A call whose name several imported services define, and that no input
// type pins to one of them, is reported as ambiguous rather than guessed.
func sdkCalls(t *testing.T, ops map[string]map[string]bool, dirs ...string) []sdkCall {
	t.Helper()
	byPkg := map[string][]goFile{}
	for _, f := range goSources(t, dirs...) {
		byPkg[path.Dir(f.path)] = append(byPkg[path.Dir(f.path)], f)
	}
	var calls []sdkCall
	for _, pkg := range sortedKeys(byPkg) {
		files := byPkg[pkg]
		pkgServices := map[string]bool{}
		ownMethods := map[string]bool{}
		for _, f := range files {
			for _, svc := range fileServices(t, f) {
				pkgServices[svc] = true
			}
			for _, d := range f.file.Decls {
				if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv != nil {
					ownMethods[fd.Name.Name] = true
				}
			}
		}
		pinned := map[string]map[string]bool{} // op -> services pinned by input types
		type pending struct {
			call       sdkCall
			candidates []string
		}
		var byName []pending
		for _, f := range files {
			aliases := fileServices(t, f)
			ast.Inspect(f.file, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.BasicLit:
					// A request sent without the SDK's method: its target.
					lit, err := strconv.Unquote(x.Value)
					if x.Kind != token.STRING || err != nil {
						return true
					}
					prefix, op, ok := strings.Cut(lit, ".")
					if svc, known := jsonTargetPrefixes[prefix]; ok && known {
						if !ops[svc][op] {
							t.Errorf("%s: X-Amz-Target %q names no operation of %s", position(f, x), lit, svc)
							return true
						}
						calls = append(calls, sdkCall{service: svc, op: op, pos: position(f, x), file: f.path})
					}
				case *ast.SelectorExpr:
					id, ok := x.X.(*ast.Ident)
					if !ok {
						return true
					}
					svc, ok := aliases[id.Name]
					if !ok {
						return true
					}
					if op, ok := strings.CutSuffix(x.Sel.Name, "Input"); ok && ops[svc][op] {
						calls = append(calls, sdkCall{service: svc, op: op, pos: position(f, x), file: f.path})
						if pinned[op] == nil {
							pinned[op] = map[string]bool{}
						}
						pinned[op][svc] = true
					}
				case *ast.CallExpr:
					// An operation method takes (ctx, input, options...).
					sel, ok := x.Fun.(*ast.SelectorExpr)
					if !ok || len(x.Args) < 2 || ownMethods[sel.Sel.Name] {
						return true
					}
					if id, ok := sel.X.(*ast.Ident); ok && aliases[id.Name] != "" {
						return true // a package function such as kinesis.NewFromConfig
					}
					var cands []string
					for svc := range pkgServices {
						if ops[svc][sel.Sel.Name] {
							cands = append(cands, svc)
						}
					}
					if len(cands) > 0 {
						sort.Strings(cands)
						byName = append(byName, pending{sdkCall{op: sel.Sel.Name, pos: position(f, x), file: f.path}, cands})
					}
				}
				return true
			})
		}
		for _, p := range byName {
			if len(p.candidates) == 1 {
				p.call.service = p.candidates[0]
				calls = append(calls, p.call)
				continue
			}
			var hit []string
			for _, c := range p.candidates {
				if pinned[p.call.op][c] {
					hit = append(hit, c)
				}
			}
			if len(hit) != 1 {
				t.Errorf("%s: %s is an operation of %v, and no input type in %s says which: name the input type where the call is made",
					p.call.pos, p.call.op, p.candidates, pkg)
				continue
			}
			p.call.service = hit[0]
			calls = append(calls, p.call)
		}
	}
	return calls
}

// fileServices maps a file's import names to the SDK services they import,
// and fails for an SDK service that no policy covers.
func fileServices(t *testing.T, f goFile) map[string]string {
	out := map[string]string{}
	for _, imp := range f.file.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		rest, ok := strings.CutPrefix(p, sdkServicePrefix)
		if !ok || strings.Contains(rest, "/") {
			continue // not a service package (types, internal, ...)
		}
		if _, known := sdkServices[rest]; !known {
			t.Errorf("%s imports the SDK's %s service, which no IAM policy under deploy/iam covers", f.path, rest)
			continue
		}
		name := rest
		if imp.Name != nil {
			name = imp.Name.Name
		}
		out[name] = rest
	}
	return out
}

func position(f goFile, n ast.Node) string {
	p := f.fset.Position(n.Pos())
	return fmt.Sprintf("%s:%d", f.path, p.Line)
}

// iamPolicy is an identity policy document.
type iamPolicy struct {
	Version   string
	Statement []iamStatement
}

type iamStatement struct {
	Sid         string
	Effect      string
	Action      stringList
	Resource    stringList
	Condition   map[string]map[string]stringList
	NotAction   stringList
	NotResource stringList
	Principal   any
}

// stringList is IAM's "a string or a list of strings".
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

func readPolicy(t *testing.T, file string) iamPolicy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("iam", file))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p iamPolicy
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("iam/%s: %v", file, err)
	}
	return p
}

// Resource forms: one stream, one table, the streams of one table, one key.
var (
	streamARN      = regexp.MustCompile(`^arn:aws:kinesis:[A-Za-z0-9_-]+:[A-Za-z0-9_]+:stream/[A-Za-z0-9_.-]+$`)
	tableARN       = regexp.MustCompile(`^arn:aws:dynamodb:[A-Za-z0-9_-]+:[A-Za-z0-9_]+:table/[A-Za-z0-9_.-]+$`)
	tableStreamARN = regexp.MustCompile(`^arn:aws:dynamodb:[A-Za-z0-9_-]+:[A-Za-z0-9_]+:table/[A-Za-z0-9_.-]+/stream/\*$`)
	keyARN         = regexp.MustCompile(`^arn:aws:kms:[A-Za-z0-9_-]+:[A-Za-z0-9_]+:key/[A-Za-z0-9_-]+$`)
)

// policySpec is what one policy must grant: the actions the code calls in
// its mode, each on the resource form it needs, and documented extras.
type policySpec struct {
	file     string
	required map[string][]string // action -> where the code calls it
	extras   map[string]string   // action -> the kms:ViaService service it is limited to
	// tableActions says which resource form a dynamodb: action takes here.
	tableActions func(action string) *regexp.Regexp
}

func TestIAMPoliciesMatchCode(t *testing.T) {
	ops := map[string]map[string]bool{}
	for svc := range sdkServices {
		ops[svc] = sdkOperations(t, svc)
	}
	calls := sdkCalls(t, ops, "cmd", "sink", "sources", "checkpoint")

	specs := map[string]*policySpec{
		"postgres": {file: "postgres-policy.json", extras: map[string]string{"kms:GenerateDataKey": "kinesis"}},
		"dynamodb": {file: "dynamodb-policy.json", extras: map[string]string{"kms:GenerateDataKey": "kinesis", "kms:Decrypt": "dynamodb"},
			tableActions: func(a string) *regexp.Regexp {
				switch a {
				case "dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator":
					return tableStreamARN
				}
				return tableARN
			}},
		"checkpoint": {file: "checkpoint-table-policy.json", tableActions: func(string) *regexp.Regexp { return tableARN }},
		"tail":       {file: "tail-policy.json", extras: map[string]string{"kms:Decrypt": "kinesis"}},
	}
	need := func(mode string, c sdkCall) {
		s := specs[mode]
		if s.required == nil {
			s.required = map[string][]string{}
		}
		s.required[c.action()] = append(s.required[c.action()], c.pos)
	}
	for _, c := range calls {
		a := c.action()
		switch {
		case noPermissionNeeded[a]:
			continue
		case unmappedOperations[a]:
			t.Errorf("%s: %s's IAM actions differ from its name; map them in iam_test.go and the policies", c.pos, a)
			continue
		case strings.HasPrefix(c.file, "cmd/cdcbridge/tail"):
			if c.service != "kinesis" {
				t.Errorf("%s: cdcbridge tail calls %s; the tail policy covers Kinesis only", c.pos, a)
				continue
			}
			need("tail", c)
		case strings.HasPrefix(c.file, "checkpoint/dynamodb/"):
			need("checkpoint", c)
		case c.service == "kinesis":
			need("postgres", c)
			need("dynamodb", c)
		case c.service == "dynamodb" || c.service == "dynamodbstreams":
			need("dynamodb", c)
		default:
			t.Errorf("%s: %s needs a permission that no policy grants", c.pos, a)
		}
	}
	// Guard against a scan that silently misses the main calls.
	for _, g := range []struct{ mode, action, in string }{
		{"postgres", "kinesis:PutRecords", "sink/"},
		{"dynamodb", "dynamodb:GetRecords", "sources/dynamodb/"},
		{"tail", "kinesis:GetRecords", "cmd/cdcbridge/tail"},
	} {
		found := false
		for _, pos := range specs[g.mode].required[g.action] {
			found = found || strings.HasPrefix(pos, g.in)
		}
		if !found {
			t.Errorf("the scan of the Go sources found no %s call under %s for the %s policy; is the scan broken?", g.action, g.in, g.mode)
		}
	}

	for _, mode := range sortedKeys(specs) {
		s := specs[mode]
		t.Run(mode, func(t *testing.T) {
			for _, a := range sortedKeys(s.required) {
				t.Logf("%s: called at %s", a, strings.Join(dedupe(s.required[a]), ", "))
			}
			checkPolicy(t, s)
		})
	}
}

func checkPolicy(t *testing.T, s *policySpec) {
	p := readPolicy(t, s.file)
	if p.Version != "2012-10-17" {
		t.Errorf("%s: Version %q, want 2012-10-17", s.file, p.Version)
	}
	granted := map[string][]string{} // action -> resources
	sids := map[string]bool{}
	for i, st := range p.Statement {
		where := fmt.Sprintf("%s statement %d (%s)", s.file, i+1, st.Sid)
		if st.Sid == "" || sids[st.Sid] {
			t.Errorf("%s: every statement needs a unique Sid", where)
		}
		sids[st.Sid] = true
		if st.Effect != "Allow" {
			t.Errorf("%s: Effect %q; these policies only allow", where, st.Effect)
		}
		if len(st.NotAction) > 0 || len(st.NotResource) > 0 || st.Principal != nil {
			t.Errorf("%s: NotAction, NotResource and Principal grant too broadly or do not belong in an identity policy", where)
		}
		if len(st.Action) == 0 || len(st.Resource) == 0 {
			t.Errorf("%s: needs Action and Resource", where)
		}
		for _, a := range st.Action {
			if strings.ContainsAny(a, "*?") {
				t.Errorf("%s: wildcard action %q grants more than the code calls", where, a)
			}
			granted[a] = append(granted[a], st.Resource...)
			if via, ok := s.extras[a]; ok {
				cond := st.Condition["StringEquals"]["kms:ViaService"]
				if len(cond) != 1 || cond[0] != via+".REGION.amazonaws.com" {
					t.Errorf("%s: %s should be limited with kms:ViaService = %s.REGION.amazonaws.com", where, a, via)
				}
			}
		}
	}
	for a, resources := range granted {
		_, req := s.required[a]
		_, extra := s.extras[a]
		if !req && !extra {
			t.Errorf("%s grants %s, which no code calls in this mode", s.file, a)
			continue
		}
		var want *regexp.Regexp
		switch prefix, _, _ := strings.Cut(a, ":"); prefix {
		case "kinesis":
			want = streamARN
		case "kms":
			want = keyARN
		case "dynamodb":
			if s.tableActions != nil {
				want = s.tableActions(a)
			}
		}
		for _, r := range resources {
			if want == nil || !want.MatchString(r) {
				t.Errorf("%s grants %s on %q, not on one resource of the right kind (%v)", s.file, a, r, want)
			}
		}
	}
	for _, a := range sortedKeys(s.required) {
		if _, ok := granted[a]; !ok {
			t.Errorf("%s does not grant %s, which the code calls at %s", s.file, a, strings.Join(dedupe(s.required[a]), ", "))
		}
	}
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// TestIAMScan checks the scan itself on code written for it: calls through
// a concrete client, through an interface, a paginator's input, an
// ambiguous name pinned by its input type, and a wrapper method.
func TestIAMScan(t *testing.T) {
	ops := map[string]map[string]bool{}
	for svc := range sdkServices {
		ops[svc] = sdkOperations(t, svc)
	}
	dir := t.TempDir()
	src := `package scan

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	streams "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
)

type putter interface {
	PutRecords(context.Context, *kinesis.PutRecordsInput, ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

type wrapper struct{ c *kinesis.Client }

// A method of our own with an operation's name: calls to it are not SDK calls.
func (w wrapper) ListShards(ctx context.Context) error {
	_, err := w.c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{})
	return err
}

func f(ctx context.Context, p putter, s *streams.Client, d *dynamodb.Client, w wrapper) {
	p.PutRecords(ctx, nil)
	in := &streams.GetRecordsInput{}
	s.GetRecords(ctx, in)
	_ = dynamodb.NewQueryPaginator(d, &dynamodb.QueryInput{})
	_ = w.ListShards(ctx)
}

// A request signed and sent without the SDK's method.
const target = "DynamoDB_20120810.UpdateItem"
`
	if err := os.MkdirAll(filepath.Join(dir, "scan"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "scan", "scan.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range sdkCalls(t, ops, dir) {
		got[c.action()] = true
	}
	want := []string{"kinesis:PutRecords", "kinesis:DescribeStreamSummary", "dynamodb:GetRecords", "dynamodb:Query", "dynamodb:UpdateItem"}
	for _, a := range want {
		if !got[a] {
			t.Errorf("scan missed %s (found %v)", a, sortedKeys(got))
		}
	}
	if got["kinesis:ListShards"] || got["kinesis:GetRecords"] {
		t.Errorf("scan attributed a wrapper method or a pinned name to the wrong service: %v", sortedKeys(got))
	}
	if len(got) != len(want) {
		t.Errorf("scan found %v, want exactly %v", sortedKeys(got), want)
	}
}
