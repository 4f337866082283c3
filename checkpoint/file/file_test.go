package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cdcbridge/cdcbridge/checkpoint"
)

func openT(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSaveLoadAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "dir", "checkpoints.json")
	s := openT(t, path)
	if _, err := s.Load(ctx, "a"); !errors.Is(err, checkpoint.ErrNotFound) {
		t.Fatalf("Load of a new key: err = %v, want ErrNotFound", err)
	}
	want := map[string]checkpoint.Checkpoint{
		"postgres/1/db/slot":         {Position: "00000000016B3780"},
		"dynamodb/arn:x/shardId-000": {Position: "0000000000000000000000000000000000000100", Data: []byte(`{"finished":true}`)},
		"binary":                     {Position: "p", Data: []byte{0, 1, 2, 0xff}},
		"spaced-json":                {Position: "p", Data: []byte(`{ "a" : 1 }`)},
		"html-json":                  {Position: "p", Data: []byte(`"<&>"`)},
	}
	for k, c := range want {
		if err := s.Save(ctx, k, c); err != nil {
			t.Fatalf("Save(%s): %v", k, err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		for k, c := range want {
			got, err := s.Load(ctx, k)
			if err != nil {
				t.Fatalf("Load(%s): %v", k, err)
			}
			if diff := cmp.Diff(c, got); diff != "" {
				t.Errorf("Load(%s) mismatch (-want +got):\n%s", k, diff)
			}
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %v, want 0600", perm)
	}
	check(openT(t, path))
}

func TestPositionNeverMovesBackwards(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.json")
	s := openT(t, path)
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "0005"}); err != nil {
		t.Fatal(err)
	}
	err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "0004"})
	if !errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("Save backwards: err = %v, want ErrStale", err)
	}
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "0005", Data: []byte(`1`)}); err != nil {
		t.Fatalf("Save of the same position with new data: %v", err)
	}
	_ = s.Close()
	s = openT(t, path)
	got, err := s.Load(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if got.Position != "0005" || string(got.Data) != "1" {
		t.Fatalf("after reopen: %+v", got)
	}
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "0001"}); !errors.Is(err, checkpoint.ErrStale) {
		t.Fatalf("Save backwards after reopen: err = %v, want ErrStale", err)
	}
}

func TestCorruptFileIsAnError(t *testing.T) {
	valid := func(t *testing.T) []byte {
		path := filepath.Join(t.TempDir(), "v.json")
		s := openT(t, path)
		if err := s.Save(context.Background(), "k", checkpoint.Checkpoint{Position: "00000042"}); err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}(t)
	tests := []struct {
		name    string
		content []byte
		wantErr string
	}{
		{"empty", nil, "empty"},
		{"whitespace", []byte("  \n"), "empty"},
		{"torn", valid[:len(valid)/2], "not a valid checkpoint document"},
		{"torn by one byte", valid[:len(valid)-2], "not a valid checkpoint document"},
		{"garbage", []byte("\x00\x00\x00\x00"), "not a valid checkpoint document"},
		{"other json", []byte(`{"hello":"world"}`), "not a valid checkpoint document"},
		{"wrong format", []byte(`{"format":"x","version":1,"checkpoints":{}}`), `format "x"`},
		{"future version", []byte(`{"format":"cdcbridge-checkpoints","version":2,"checkpoints":{}}`), "version 2"},
		{"no checkpoints", []byte(`{"format":"cdcbridge-checkpoints","version":1}`), "checkpoints"},
		{"bit flip", []byte(strings.Replace(string(valid), "00000042", "00000043", 1)), "checksum mismatch"},
		{"trailing data", append(append([]byte{}, valid...), []byte("{}")...), "data after the document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "c.json")
			if err := os.WriteFile(path, tt.content, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open succeeded on a %s file", tt.name)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q should name the file and contain %q", err, tt.wantErr)
			}
			// The corrupt file is left alone for the operator.
			b, _ := os.ReadFile(path)
			if string(b) != string(tt.content) {
				t.Fatalf("Open changed the corrupt file")
			}
		})
	}
}

func TestHandEditedWithoutChecksum(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	doc := `{"format":"cdcbridge-checkpoints","version":1,"checkpoints":{"k":{"position":"7","data":{"a": [1, 2]},"saved_at":"2026-01-01T00:00:00Z"}}}`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openT(t, path)
	got, err := s.Load(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(checkpoint.Checkpoint{Position: "7", Data: []byte(`{"a":[1,2]}`)}, got); diff != "" {
		t.Fatalf("mismatch (-want +got):\n%s", diff)
	}
}

func TestUnwritableDirectoryFailsSave(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "c.json")
	s := openT(t, path)
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "1"}); err != nil {
		t.Fatal(err)
	}
	// Tests may run as root, for whom permission bits do not stop a write;
	// a directory that is gone fails for everyone.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "2"}); err == nil {
		t.Fatal("Save succeeded although the directory is gone")
	}
	// Load reports what is durable, not what failed to be written.
	got, err := s.Load(ctx, "k")
	if err != nil || got.Position != "1" {
		t.Fatalf("Load after a failed Save = %+v, %v; want position 1", got, err)
	}
	// A failed Save is not held against a later one.
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "9"}); err == nil {
		t.Fatal("Save succeeded although the directory is gone")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(ctx, "k", checkpoint.Checkpoint{Position: "2"}); err != nil {
		t.Fatalf("Save once the directory is back: %v", err)
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.json")
	s := openT(t, path)
	if s2, err := Open(path); err == nil {
		_ = s2.Close()
		t.Fatal("second Open of a file in use succeeded")
	} else if !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open: %v, want a lock error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	openT(t, path)
}

func TestLeftoverTempFilesAreRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.json")
	left := filepath.Join(dir, ".c.json.tmp-12345")
	if err := os.WriteFile(left, []byte("half a docu"), 0o600); err != nil {
		t.Fatal(err)
	}
	openT(t, path)
	if _, err := os.Stat(left); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("leftover temporary file still there: %v", err)
	}
}

func TestConcurrentSavesAllDurable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.json")
	s := openT(t, path)
	var wg sync.WaitGroup
	const writers, saves = 8, 25
	for w := range writers {
		wg.Go(func() {
			for i := range saves {
				c := checkpoint.Checkpoint{Position: fmt.Sprintf("%04d", i)}
				if err := s.Save(ctx, fmt.Sprintf("k%d", w), c); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	_ = s.Close()
	s = openT(t, path)
	for w := range writers {
		got, err := s.Load(ctx, fmt.Sprintf("k%d", w))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%04d", saves-1); got.Position != want {
			t.Errorf("k%d at %q, want %q", w, got.Position, want)
		}
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.json")
	s := openT(t, path)
	for _, k := range []string{"a/1", "a/2", "a/x/3", "a", "b/1"} {
		if err := s.Save(ctx, k, checkpoint.Checkpoint{Position: "1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "a/1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "missing"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s = openT(t, path)
	keys, err := s.Keys(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a/2"}, keys); diff != "" {
		t.Fatalf("keys after Delete (-want +got):\n%s", diff)
	}
}

func TestClosedStore(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "c.json"))
	_ = s.Close()
	if err := s.Save(context.Background(), "k", checkpoint.Checkpoint{Position: "1"}); err == nil {
		t.Fatal("Save on a closed store succeeded")
	}
}

func BenchmarkSave(b *testing.B) {
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "c.json"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := range 64 {
		_ = s.Save(ctx, fmt.Sprintf("dynamodb/arn/shard-%03d", i), checkpoint.Checkpoint{Position: "0"})
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := s.Save(ctx, "dynamodb/arn/shard-000", checkpoint.Checkpoint{Position: fmt.Sprintf("%040d", i)}); err != nil {
			b.Fatal(err)
		}
	}
}

// A read-only store reads what the process holding the file saved, while
// it holds it, and refuses to write.
func TestOpenReadOnlyBesideTheOwner(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "checkpoints.json")
	owner := openT(t, path)
	if err := owner.Save(ctx, "k", checkpoint.Checkpoint{Position: "01", Data: []byte(`{"a":1}`)}); err != nil {
		t.Fatal(err)
	}
	ro, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("OpenReadOnly while the owner holds the file: %v", err)
	}
	defer ro.Close()
	c, err := ro.Load(ctx, "k")
	if err != nil || c.Position != "01" || string(c.Data) != `{"a":1}` {
		t.Fatalf("Load = %+v, %v", c, err)
	}
	if err := ro.Save(ctx, "k", checkpoint.Checkpoint{Position: "02"}); err == nil {
		t.Fatal("Save on a read-only store succeeded")
	}
	if err := owner.Save(ctx, "k", checkpoint.Checkpoint{Position: "03"}); err != nil {
		t.Fatalf("the owner cannot save after a reader opened the file: %v", err)
	}
}
