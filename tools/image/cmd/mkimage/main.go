// Command mkimage writes cdcbridge's container image as an OCI image
// layout archive, or its file tree for the Dockerfile, from a static
// binary (see package image). `make image` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cdcbridge/cdcbridge/tools/image"
)

func main() {
	binary := flag.String("binary", "bin/cdcbridge", "the static cdcbridge binary")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "the CA certificate bundle to include")
	version := flag.String("version", "dev", "the version stamped into the binary")
	revision := flag.String("revision", "unknown", "the commit the binary was built from")
	out := flag.String("o", "", "write the image archive here")
	tree := flag.String("tree", "", "instead, write the image's file tree under this directory (as root)")
	flag.Parse()
	if err := run(*binary, *ca, *version, *revision, *out, *tree); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(binaryPath, caPath, version, revision, out, tree string) error {
	if (out == "") == (tree == "") {
		return fmt.Errorf("give exactly one of -o ARCHIVE and -tree DIR")
	}
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return err
	}
	arch, err := image.Inspect(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", binaryPath, err)
	}
	certs, err := os.ReadFile(caPath)
	if err != nil {
		return fmt.Errorf("%w (Debian's ca-certificates package provides it)", err)
	}
	files := image.Files(bin, certs)
	if tree != "" {
		return image.WriteTree(tree, files)
	}
	created, err := sourceDate()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".image-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	built, err := image.Write(f, files, image.Meta{Version: version, Revision: revision, Created: created, Arch: arch})
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		f.Close()
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Printf("%s  %s  linux/%s\n  layer %.1f MiB compressed, %.1f MiB unpacked; archive %s (%.1f MiB)\n  load it with: docker load -i %s\n",
		built.Tag, built.Digest, arch, mib(built.LayerSize), mib(built.TreeSize), out, mib(st.Size()), out)
	return nil
}

// sourceDate is the image's creation time: SOURCE_DATE_EPOCH (seconds),
// as reproducible builds define it, else the Unix epoch.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
