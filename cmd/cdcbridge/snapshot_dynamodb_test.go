package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestSnapshotCommandDynamoDB: requests and cancels go to the directory
// beside the checkpoint file, --status lists them before the bridge took
// them, and what does not apply to a DynamoDB load is refused by name.
func TestSnapshotCommandDynamoDB(t *testing.T) {
	for _, v := range configVars() {
		t.Setenv(v.Name, v.Default)
	}
	cp := filepath.Join(t.TempDir(), "cp.json")
	t.Setenv("CDCBRIDGE_SOURCE", "dynamodb")
	t.Setenv("CDCBRIDGE_DYNAMODB_TABLE", "orders")
	t.Setenv("CDCBRIDGE_KINESIS_STREAM", "s")
	t.Setenv("CDCBRIDGE_CHECKPOINT_STORE", "file://"+cp)
	run := func(args ...string) (int, string) {
		var out, errOut bytes.Buffer
		code := runSnapshot(context.Background(), args, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	refused := []struct {
		args []string
		want string
	}{
		{[]string{"--where", "x > 1", "orders"}, "--where is for PostgreSQL tables"},
		{[]string{"other"}, "reads DynamoDB table orders, not other"},
	}
	for _, r := range refused {
		if code, out := run(r.args...); code != exitConfig || !strings.Contains(out, r.want) {
			t.Errorf("snapshot %q: exit %d, want %d and %q:\n%s", r.args, code, exitConfig, r.want, out)
		}
	}
	code, out := run("orders")
	id := regexp.MustCompile(`snapshot (s[0-9-]+[0-9a-f]+) requested`).FindStringSubmatch(out)
	if code != exitOK || id == nil {
		t.Fatalf("snapshot orders: exit %d:\n%s", code, out)
	}
	if files, _ := filepath.Glob(filepath.Join(cp+".requests", "*.json")); len(files) != 1 {
		t.Errorf("request files: %v, want one", files)
	}
	code, out = run("--status")
	if code != exitOK || !strings.Contains(out, id[1]) || !strings.Contains(out, "has not taken the request yet") {
		t.Errorf("snapshot --status: exit %d, want the request listed as not taken yet:\n%s", code, out)
	}
	if code, out := run("--cancel", id[1]); code != exitOK || !strings.Contains(out, "cancel of snapshot "+id[1]) {
		t.Errorf("snapshot --cancel: exit %d:\n%s", code, out)
	}
	if files, _ := filepath.Glob(filepath.Join(cp+".requests", "*.json")); len(files) != 2 {
		t.Errorf("request files after the cancel: %v, want two", files)
	}
	t.Setenv("CDCBRIDGE_CHECKPOINT_STORE", "dynamodb://ckpt")
	t.Setenv("CDCBRIDGE_DYNAMODB_SNAPSHOT", "")
	if code, out := run("orders"); code != exitConfig || !strings.Contains(out, "not supported yet with CDCBRIDGE_CHECKPOINT_STORE=dynamodb://") {
		t.Errorf("snapshot with a dynamodb:// store: exit %d:\n%s", code, out)
	}
}
