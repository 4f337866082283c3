// Package deploy holds the deployment artefacts of cdcbridge and no code:
// Kubernetes manifests (kubernetes/), a Compose file for a local trial
// (compose.yaml), least-privilege IAM policies (iam/), Prometheus alerting
// rules (prometheus/) and a Grafana dashboard (grafana/). The operator's
// runbook is docs/runbook.md.
//
// Its tests keep the artefacts true to the code: the manifests carry the
// probes, limits and security settings they claim; every metric a rule or
// panel uses is defined by the daemon; every AWS API the code calls is
// allowed by the IAM policy of its mode, and nothing else is; every alert
// has a runbook section. Because the module has no YAML library, the files
// keep to a strict YAML subset read by the tests' own reader, which refuses
// anything it does not fully understand (see yaml_test.go). When promtool
// or kubectl is installed, the tests also run them on the files.
package deploy
