package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
)

const configUsage = `Usage: cdcbridge config [--json | --check]

Without flags, lists every CDCBRIDGE_ variable with its default, meaning
and value in the environment (secrets redacted).
`

// runConfig is `cdcbridge config`: --json prints the declarations (name,
// default, description) for tools and tests; --check validates the
// environment as the daemon does, exiting 2 with one line per problem.
func runConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, configUsage); fs.PrintDefaults() }
	asJSON := fs.Bool("json", false, "print every variable's name, default and description as a JSON array")
	check := fs.Bool("check", false, "validate the environment: exit 2 and name each invalid variable")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if fs.NArg() > 0 || (*asJSON && *check) {
		fs.Usage()
		return exitConfig
	}
	switch {
	case *check:
		if _, err := loadConfig(); err != nil {
			fmt.Fprintln(stderr, err)
			return exitConfig
		}
		fmt.Fprintln(stdout, "configuration is valid")
		return exitOK
	case *asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(configVars()); err != nil {
			fmt.Fprintln(stderr, err)
			return exitFailed
		}
		return exitOK
	}
	if err := printConfig(stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailed
	}
	return exitOK
}

// printConfig writes every variable: name, default, meaning, and the value
// as set in the environment (secrets redacted; blank means the default).
func printConfig(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VARIABLE\tDEFAULT\tMEANING\tSET TO")
	for _, v := range configVars() {
		cur := ""
		if val, ok := os.LookupEnv(v.Name); ok {
			cur = val
			if v.Secret {
				cur = redactURLs(val)
			}
		}
		def := v.Default
		if def == "" {
			def = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", v.Name, def, v.Desc, cur)
	}
	return tw.Flush()
}

// configVar is one variable as `cdcbridge config --json` prints it.
type configVar struct {
	Name    string `json:"name"`
	Default string `json:"default"`
	Desc    string `json:"description"`
	Secret  bool   `json:"secret,omitempty"`
}

// configVars lists the variables in declaration order.
func configVars() []configVar {
	out := make([]configVar, len(options))
	for i, o := range options {
		out[i] = configVar{Name: name(o.name), Default: o.def, Desc: o.desc, Secret: o.secret}
	}
	return out
}
