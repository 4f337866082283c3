package main

import (
	"context"
	"fmt"
	"io"
)

func runTail(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "tail: pending")
	return exitFailed
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "check: pending")
	return exitFailed
}
