package deploy

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/keybroker/keybroker/internal/callers"
	"github.com/keybroker/keybroker/internal/config"
)

// m walks decoded YAML: m(doc, "spec", "template", "spec").
func m(v any, keys ...string) any {
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func load(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("kubernetes", name))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc
}

func TestKubernetes_EveryManifestParses(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	if len(files) < 6 {
		t.Fatalf("only %d manifests", len(files))
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" || filepath.Base(f) == "redis.yaml" {
			continue
		}
		doc := load(t, filepath.Base(f))
		if name := m(doc, "metadata", "name"); m(doc, "apiVersion") == nil || m(doc, "kind") == nil || (name != "keybroker" && name != "keybroker-redis") {
			t.Errorf("%s: apiVersion, kind and metadata.name keybroker required", f)
		}
	}
}

// keybrokerConfig is the configuration in the ConfigMap, validated as
// keybroker would (files that exist only in the pod aside).
func keybrokerConfig(t *testing.T) *config.Config {
	t.Helper()
	text, _ := m(load(t, "configmap.yaml"), "data", "config.yaml").(string)
	cfg, err := config.Parse([]byte(text), envOf(t))
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.Contains(line, "cannot read") {
				t.Fatalf("ConfigMap config.yaml does not validate: %v", err)
			}
		}
		// Only pod-side files were missing: validate again without them.
		text = regexp.MustCompile(`(ca_file|password_file|jwks_file): /etc/[^\s,}]+`).ReplaceAllString(text, `$1: ""`)
		if cfg, err = config.Parse([]byte(text), envOf(t)); err != nil {
			t.Fatalf("ConfigMap config.yaml: %v", err)
		}
	}
	return cfg
}

// envOf gives every ${VAR} a shipped config names a plausible value: the
// key hashes of fresh random keys.
func envOf(t *testing.T) config.LookupEnv {
	t.Helper()
	env := map[string]string{"VAULT_ADDR": "https://vault.internal:8200", "KEYBROKER_ROLE_ID": "role",
		"INFOCYTE_URL": "https://acme.infocyte.com/api", "CREDENTIALS_DIRECTORY": "/run/credentials/keybroker.service"}
	for _, v := range []string{"SOAR_KEY_SHA256", "SIEM_KEY_SHA256"} {
		_, sum, err := callers.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		env[v] = sum
	}
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKubernetes_DeploymentInvariants(t *testing.T) {
	dep := load(t, "deployment.yaml")
	cfg := keybrokerConfig(t)
	pod := m(dep, "spec", "template", "spec")
	if m(dep, "spec", "replicas") != 2 {
		t.Error("replicas must be 2")
	}
	if m(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pod must run as non-root")
	}
	if m(pod, "serviceAccountName") != "keybroker" || cfg.Vault.Auth.Method != "kubernetes" || cfg.Vault.Auth.Role != "keybroker" {
		t.Error("Vault Kubernetes auth must use the keybroker service account and role")
	}
	if cfg.RateLimit.Backend != "redis" || cfg.RateLimit.Replicas != 2 {
		t.Error("two replicas need the redis limiter with replicas: 2")
	}
	grace, _ := m(pod, "terminationGracePeriodSeconds").(int)
	if float64(grace) <= cfg.Server.ShutdownTimeout.D().Seconds() {
		t.Errorf("terminationGracePeriodSeconds %d must exceed shutdown_timeout %v", grace, cfg.Server.ShutdownTimeout.D())
	}
	c := m(pod, "containers").([]any)[0]
	sc := m(c, "securityContext")
	if m(sc, "readOnlyRootFilesystem") != true || m(sc, "allowPrivilegeEscalation") != false {
		t.Error("container needs a read-only root and no privilege escalation")
	}
	if drop, _ := m(sc, "capabilities", "drop").([]any); len(drop) != 1 || drop[0] != "ALL" {
		t.Error("container must drop ALL capabilities")
	}
	if m(c, "resources", "limits", "memory") == nil || m(c, "resources", "limits", "cpu") == nil {
		t.Error("resource limits required")
	}
	ports := map[string]string{}
	for _, p := range m(c, "ports").([]any) {
		ports[m(p, "name").(string)] = strings.TrimSpace(strings.Trim(yamlString(m(p, "containerPort")), "\n"))
	}
	if ports["http"] != port(t, cfg.Listen) || ports["admin"] != port(t, cfg.Admin.Listen) {
		t.Errorf("container ports %v do not match the config's listen %s and admin %s", ports, cfg.Listen, cfg.Admin.Listen)
	}
	// Probes hit the admin endpoints keybroker serves (cmd/proxy/admin.go).
	for probe, path := range map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"} {
		if m(c, probe, "httpGet", "path") != path || m(c, probe, "httpGet", "port") != "admin" {
			t.Errorf("%s must GET %s on the admin port", probe, path)
		}
	}
	svc := load(t, "service.yaml")
	if p := m(svc, "spec", "ports").([]any)[0]; m(p, "targetPort") != "http" {
		t.Error("the Service must target the http port")
	}
	if !strings.HasPrefix(cfg.Listen, "0.0.0.0:") || !strings.HasPrefix(cfg.Admin.Listen, "0.0.0.0:") {
		t.Error("in a pod keybroker must listen on all interfaces")
	}
}

func yamlString(v any) string {
	b, _ := yaml.Marshal(v)
	return string(b)
}

func TestKubernetes_NetworkPolicyAndPDB(t *testing.T) {
	np := load(t, "networkpolicy.yaml")
	types := yamlString(m(np, "spec", "policyTypes"))
	if !strings.Contains(types, "Egress") || !strings.Contains(types, "Ingress") {
		t.Error("NetworkPolicy must restrict ingress and egress")
	}
	egress := yamlString(m(np, "spec", "egress"))
	for _, p := range []string{"port: 53", "port: 8200", "port: 6379", "port: 443", "10.0.0.0/8"} {
		if !strings.Contains(egress, p) {
			t.Errorf("egress lacks %s", p)
		}
	}
	if strings.Count(egress, "port:") != 5 {
		t.Errorf("egress allows more than DNS, Vault, Redis and HTTPS:\n%s", egress)
	}
	// Through an egress proxy: no direct internet at all, the proxy instead.
	via := load(t, "networkpolicy-egress-proxy.yaml")
	vegress := yamlString(m(via, "spec", "egress"))
	for _, p := range []string{"port: 53", "port: 8200", "port: 6379", "port: 3128"} {
		if !strings.Contains(vegress, p) {
			t.Errorf("egress-proxy policy lacks %s", p)
		}
	}
	if strings.Contains(vegress, "0.0.0.0/0") || strings.Contains(vegress, "port: 443") || m(via, "metadata", "name") != "keybroker" {
		t.Errorf("the egress-proxy policy must replace the direct one and allow no direct internet:\n%s", vegress)
	}
	pdb := load(t, "pdb.yaml")
	if m(pdb, "spec", "minAvailable") != 1 || m(pdb, "spec", "selector", "matchLabels", "app.kubernetes.io/name") != "keybroker" {
		t.Error("PodDisruptionBudget must keep one keybroker pod")
	}
}

func TestDockerfile_StaticNonRoot(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	stages := strings.Count(s, "\nFROM ") + strings.Count(s[:5], "FROM")
	final := s[strings.LastIndex(s, "FROM "):]
	if stages < 2 || !strings.Contains(s, "CGO_ENABLED=0") ||
		!(strings.Contains(final, "distroless/static") || strings.Contains(final, "FROM scratch")) ||
		!strings.Contains(final, "USER 65532") {
		t.Errorf("want a multi-stage build of a static binary onto distroless/scratch as a non-root user")
	}
}

func TestSystemd_Hardening(t *testing.T) {
	raw, err := os.ReadFile("systemd/keybroker.service")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for _, want := range []string{"DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n",
		"AmbientCapabilities=\n", "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID", "TimeoutStopSec=40",
		"serve --config /etc/keybroker/config.yaml"} {
		if !strings.Contains(s, want) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed; skipped `systemd-analyze verify`")
		return
	}
	// verify wants the ExecStart binary to exist: point it at a stand-in.
	dir := t.TempDir()
	bin := filepath.Join(dir, "keybroker")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "keybroker.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(raw, []byte("/usr/local/bin/keybroker"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil && strings.Contains(string(out), "keybroker.service:") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestVault_ScriptsParse: the Vault scripts are valid bash, and the caller
// identity script's token claim is the one its printed callers: entry
// matches (the same pair cmd/proxy's Vault identity test runs for real).
func TestVault_ScriptsParse(t *testing.T) {
	files, _ := filepath.Glob("vault/*.sh")
	if len(files) < 2 {
		t.Fatalf("vault scripts: %v", files)
	}
	for _, f := range files {
		if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	s, err := os.ReadFile("vault/caller-identity.sh")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`template="{\"keybroker_caller\": \"$caller\"}"`, `claims: {"/keybroker_caller": $caller}`,
		"client_id=keybroker", "audience: keybroker", `path "identity/oidc/token/$caller"`} {
		if !strings.Contains(string(s), want) {
			t.Errorf("caller-identity.sh lacks %s", want)
		}
	}
}

// TestVault_ReadmeListsEveryPathThePolicyGrants: deploy/README.md names
// each path keybroker-policy.hcl grants, so an operator reviewing the
// policy sees all of it, and a path added to one is added to the other.
func TestVault_ReadmeListsEveryPathThePolicyGrants(t *testing.T) {
	policy, err := os.ReadFile("vault/keybroker-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	paths := regexp.MustCompile(`(?m)^path "([^"]+)"`).FindAllStringSubmatch(string(policy), -1)
	if len(paths) < 8 {
		t.Fatalf("found only %d paths in the policy", len(paths))
	}
	for _, p := range paths {
		if !strings.Contains(string(readme), "`"+p[1]+"`") {
			t.Errorf("deploy/README.md does not name %s, which the policy grants", p[1])
		}
	}
}

// TestKubernetes_CallersURLNamesTheNamespaceItRunsIn: the example caller
// reaches keybroker at keybroker.<namespace>.svc, and the kustomization
// creates that namespace and puts everything in it.
func TestKubernetes_CallersURLNamesTheNamespaceItRunsIn(t *testing.T) {
	kust, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns := regexp.MustCompile(`(?m)^namespace: (\S+)`).FindStringSubmatch(string(kust))
	if ns == nil || !strings.Contains(string(kust), "- namespace.yaml") {
		t.Fatal("kustomization.yaml sets no namespace, or does not create it")
	}
	nsDoc, err := os.ReadFile("kubernetes/namespace.yaml")
	if err != nil || !strings.Contains(string(nsDoc), "kind: Namespace") || !strings.Contains(string(nsDoc), "name: "+ns[1]) {
		t.Errorf("namespace.yaml does not create %s (%v)", ns[1], err)
	}
	caller, err := os.ReadFile("kubernetes/example-caller/soar-workflows.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(caller), "http://keybroker."+ns[1]+".svc:8080") {
		t.Errorf("the example caller's KEYBROKER_URL does not name namespace %s", ns[1])
	}
}
