package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cdcbridge/cdcbridge/test/testenv"
	"github.com/cdcbridge/cdcbridge/test/verify"
)

const badRowsSchema = `
CREATE TABLE longkey (k text PRIMARY KEY, ver bigint NOT NULL, pad text NOT NULL);
ALTER TABLE longkey REPLICA IDENTITY FULL;
CREATE TABLE texts (id int PRIMARY KEY, ver bigint NOT NULL, pad text NOT NULL);
ALTER TABLE texts REPLICA IDENTITY FULL;
CREATE TABLE bin (id int PRIMARY KEY, ver bigint NOT NULL, pad bytea NOT NULL);
ALTER TABLE bin REPLICA IDENTITY FULL;
CREATE TABLE blobs (id int PRIMARY KEY, ver bigint NOT NULL, pad text NOT NULL);
CREATE TABLE nopk (a int, ver bigint, pad text);
CREATE TABLE nopkfull (a int, ver bigint, pad text);
ALTER TABLE nopkfull REPLICA IDENTITY FULL;`

// hardTexts are values that trip encoders: a character of every Unicode
// plane, emoji sequences, control characters, JSON and HTML specials.
func hardTexts() []string {
	var planes strings.Builder
	for p := rune(0); p <= 16; p++ {
		r := p<<16 | 0x0041 // a valid scalar value in each plane
		if p == 0 {
			r = 0xFFFD
		}
		if p == 16 {
			r = 0x10FFFD
		}
		planes.WriteRune(r)
	}
	var controls strings.Builder
	for r := rune(1); r < 0x20; r++ {
		controls.WriteRune(r)
	}
	controls.WriteString("\u007f\u0080\u0085\u009f")
	return []string{
		planes.String(),
		"😀👨‍👩‍👧‍👦🏳️‍🌈🇺🇦 e\u0301 \u200d\u200b\ufeff",
		controls.String(),
		"\u2028\u2029 \u202e reversed \u202c",
		`"quoted" \backslash\ /slash/ </script><!-- & 'single' \u0000-as-text`,
		"𝄞 𠀀 \U000E0001 \U000F0000 中文 العربية עברית ไทย",
		strings.Repeat("é", 3000),
		"",
	}
}

// TestBadRows sends awkward rows through the Postgres bridge while a
// workload keeps writing: a 2 MiB value on a 1 MiB stream and a 50 MiB
// TOAST value (both to the dead-letter directory, placeholders on the
// stream), 300-character primary keys, every Unicode plane, emoji and
// control characters, arbitrary bytea, and tables without a primary key.
// The verifier checks every keyed change and its payload; the bridge's
// memory peak for the 50 MiB value is reported, and its heap must come
// back down afterwards.
func TestBadRows(t *testing.T) {
	const name = "bad input: awkward rows"
	t.Parallel()
	pg, kin := testenv.PG(t), testenv.Kinesalite(t)
	r := newPGRig(t, name, pg, kin)
	r.Log.Ignore("public.nopk", "public.nopkfull") // checked below, from the stream
	r.Work.Changes, r.Work.TxPerSecond = Pick(params, 1500, 6000), 15
	pgExec(t, pg.URL(r.DB), badRowsSchema)
	env := r.env(pg.URL(r.DB), r.Kinesis)
	for i, kv := range env {
		if strings.HasPrefix(kv, "CDCBRIDGE_POSTGRES_TABLES=") {
			env[i] = kv + ",public.longkey,public.texts,public.bin,public.blobs,public.nopk,public.nopkfull"
		}
	}
	b := NewBridge(t, env...)
	b.Start()
	waitStreaming(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	wait := runAsync(t, "workload", func() error { return r.Work.Run(ctx) })
	conn, err := pgx.Connect(ctx, pg.URL(r.DB))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	add := func(table string, key map[string]any, op string, ver int64, pad string) {
		c := verify.Change{Table: table, Key: verify.CanonicalKey(key), Op: op, Ver: ver, At: time.Now()}
		if op != "delete" {
			c.Digest = verify.PayloadDigest(pad)
		}
		r.Log.Add(c)
	}

	// 2 MiB on a 1 MiB stream: the insert and the update (its before
	// image is the 2 MiB row) go to the dead-letter directory.
	big := strings.Repeat("x", 2<<20)
	exec(`INSERT INTO items (id, ver, pad) VALUES (5000001, 1, $1)`, big)
	add(pgTable, map[string]any{"id": 5000001}, "insert", 1, big)
	exec(`UPDATE items SET ver = 2, pad = 'small' WHERE id = 5000001`)
	add(pgTable, map[string]any{"id": 5000001}, "update", 2, "small")
	r.Work.touched.Store(int64(5000001), struct{}{})

	// 300-character keys, two of them equal but for the last character.
	for i, k := range []string{strings.Repeat("k", 150) + strings.Repeat("é", 149) + "a", strings.Repeat("k", 150) + strings.Repeat("é", 149) + "b"} {
		key := map[string]any{"k": k}
		exec(`INSERT INTO longkey VALUES ($1, 1, 'one')`, k)
		add("public.longkey", key, "insert", 1, "one")
		exec(`UPDATE longkey SET ver = 2, pad = 'two' WHERE k = $1`, k)
		add("public.longkey", key, "update", 2, "two")
		if i == 0 {
			exec(`DELETE FROM longkey WHERE k = $1`, k)
			add("public.longkey", key, "delete", 2, "")
			r.Log.SetFinal("public.longkey", verify.CanonicalKey(key), 0, false)
		} else {
			r.Log.SetFinal("public.longkey", verify.CanonicalKey(key), 2, true)
		}
	}

	// Hard text: inserted, updated to the next sample, half deleted.
	texts := hardTexts()
	for i, s := range texts {
		key := map[string]any{"id": i}
		exec(`INSERT INTO texts VALUES ($1, 1, $2)`, i, s)
		add("public.texts", key, "insert", 1, s)
		next := texts[(i+1)%len(texts)]
		exec(`UPDATE texts SET ver = 2, pad = $2 WHERE id = $1`, i, next)
		add("public.texts", key, "update", 2, next)
		if i%2 == 0 {
			exec(`DELETE FROM texts WHERE id = $1`, i)
			add("public.texts", key, "delete", 2, "")
			r.Log.SetFinal("public.texts", verify.CanonicalKey(key), 0, false)
		} else {
			r.Log.SetFinal("public.texts", verify.CanonicalKey(key), 2, true)
		}
	}

	// Arbitrary bytes.
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	rng := params.Rand(name)
	random := make([]byte, 10000)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	for i, v := range [][]byte{all, random, {}, {0}, []byte("\xff\xfe\x00\x00not utf-8\xc3\x28")} {
		exec(`INSERT INTO bin VALUES ($1, 1, $2)`, i, v)
		add("public.bin", map[string]any{"id": i}, "insert", 1, `\x`+hex.EncodeToString(v))
		r.Log.SetFinal("public.bin", verify.CanonicalKey(map[string]any{"id": i}), 1, true)
	}

	// Tables without a primary key: without a replica identity only
	// inserts are published, and the application's updates and deletes
	// must keep working; with REPLICA IDENTITY FULL everything is, in
	// order, under the table's partition key.
	exec(`INSERT INTO nopk VALUES (1, 1, 'a')`)
	exec(`UPDATE nopk SET ver = 2 WHERE a = 1`)
	exec(`DELETE FROM nopk WHERE a = 1`)
	exec(`INSERT INTO nopkfull VALUES (1, 1, 'a')`)
	exec(`UPDATE nopkfull SET ver = 2 WHERE a = 1`)
	exec(`DELETE FROM nopkfull WHERE a = 1`)

	// 50 MiB in one TOASTed value: to the dead-letter directory, nothing
	// else held up, the memory it took given back.
	baseHeap, _ := b.Metric("go_memstats_heap_inuse_bytes")
	baseRSS := procStatus(b.Pid(), "VmRSS")
	type peaks struct{ rss, heap int64 }
	peak := make(chan peaks, 1)
	stopPeak := make(chan struct{})
	go func() {
		var p peaks
		for {
			select {
			case <-stopPeak:
				peak <- p
				return
			case <-time.After(50 * time.Millisecond):
			}
			p.rss = max(p.rss, procStatus(b.Pid(), "VmHWM"))
			if h, err := b.Metric("go_memstats_heap_inuse_bytes"); err == nil {
				p.heap = max(p.heap, int64(h))
			}
		}
	}()
	huge := randText(rng, 50<<20)
	exec(`INSERT INTO blobs VALUES (1, 1, $1)`, huge)
	add("public.blobs", map[string]any{"id": 1}, "insert", 1, huge)
	r.Log.SetFinal("public.blobs", verify.CanonicalKey(map[string]any{"id": 1}), 1, true)
	huge = ""
	hugeAt := time.Now()
	// Changes committed after it must not wait for it long.
	exec(`INSERT INTO texts VALUES (1000, 1, 'after the blob')`)
	add("public.texts", map[string]any{"id": 1000}, "insert", 1, "after the blob")
	r.Log.SetFinal("public.texts", verify.CanonicalKey(map[string]any{"id": 1000}), 1, true)

	wait()
	res := r.finish(b, 3*time.Minute)
	close(stopPeak)
	pk := <-peak
	recs, err := verify.ReadAll(ctx, kin.Client(), r.Stream)
	if err != nil {
		t.Fatal(err)
	}
	var blobArrived, afterArrived time.Duration
	for _, rec := range recs {
		switch {
		case rec.Env == nil:
		case rec.Env.Subject == "public.blobs" && blobArrived == 0:
			blobArrived = rec.Arrival.Sub(hugeAt)
		case rec.Env.Subject == "public.texts" && string(rec.Env.Key) == `{"id":1000}` && afterArrived == 0:
			afterArrived = rec.Arrival.Sub(hugeAt)
		}
	}
	logf(t, "50 MiB value: peak resident memory %d MiB, peak heap in use %d MiB (before it: %d MiB resident, heap %d MiB); "+
		"its placeholder arrived %s after its commit, the next change %s after it",
		pk.rss>>20, pk.heap>>20, baseRSS>>20, int64(baseHeap)>>20, blobArrived.Round(time.Millisecond), afterArrived.Round(time.Millisecond))
	if res.Placeholders < 3 || res.DeadLettered < 3 {
		t.Errorf("%d placeholders, %d dead-letter entries; want the 2 MiB insert and update and the 50 MiB insert", res.Placeholders, res.DeadLettered)
	}
	// The heap comes back down once the value has passed.
	var heap float64
	for deadline := time.Now().Add(Pick(params, 3*time.Minute, 3*time.Minute)); time.Now().Before(deadline); time.Sleep(time.Second) {
		heap, _ = b.Metric("go_memstats_heap_inuse_bytes")
		if heap < baseHeap+32<<20 {
			break
		}
	}
	logf(t, "heap in use after the 50 MiB value: %d MiB (before: %d MiB)", int64(heap)>>20, int64(baseHeap)>>20)
	if heap >= baseHeap+32<<20 {
		t.Errorf("heap in use stays at %d MiB after the 50 MiB value passed (before: %d MiB)", int64(heap)>>20, int64(baseHeap)>>20)
	}
	MemoryNote = fmt.Sprintf("50 MiB TOAST value: peak resident memory %d MiB, peak heap %d MiB, heap back to %d MiB afterwards",
		pk.rss>>20, pk.heap>>20, int64(heap)>>20)

	// The keyless tables, read straight from the stream.
	ops := map[string][]string{}
	for _, rec := range recs {
		if rec.Env == nil || (rec.Env.Subject != "public.nopk" && rec.Env.Subject != "public.nopkfull") {
			continue
		}
		ops[rec.Env.Subject] = append(ops[rec.Env.Subject], rec.Env.Op+"@"+rec.Env.PartitionKey)
	}
	if got := strings.Join(ops["public.nopk"], " "); got != "insert@public.nopk:*" {
		t.Errorf("table without key or identity: %q, want only its insert", got)
	}
	if got := strings.Join(ops["public.nopkfull"], " "); got != "insert@public.nopkfull:* update@public.nopkfull:* delete@public.nopkfull:*" {
		t.Errorf("table without key, identity full: %q, want insert, update, delete under the table's key", got)
	}
}

// MemoryNote is the memory figure of the 50 MiB value, for the report.
var MemoryNote string

// procStatus reads a size field (kB) of /proc/pid/status, in bytes.
func procStatus(pid int, field string) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
