package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/keybroker/keybroker/internal/config"
)

// manifests are the Kubernetes objects shipped in kubernetes/, decoded
// strictly into the real API types.
type manifests struct {
	deployments     []appsv1.Deployment
	services        []corev1.Service
	configMaps      []corev1.ConfigMap
	secrets         []corev1.Secret
	serviceAccounts []corev1.ServiceAccount
	networkPolicies map[string]networkingv1.NetworkPolicy // by file
	files           []string
}

// decodeStrict decodes one YAML document into out, refusing any field the
// API type does not have (a misspelt field would be silently dropped by
// the API server's non-strict clients, or refused by a strict one).
func decodeStrict(doc []byte, out any) error {
	js, err := sigsyaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(out)
}

// decodeObject decodes a document by its kind into ms.
func (ms *manifests) decodeObject(file string, doc []byte) error {
	var head struct{ APIVersion, Kind string }
	if err := sigsyaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	var err error
	switch head.APIVersion + " " + head.Kind {
	case "apps/v1 Deployment":
		var o appsv1.Deployment
		err = decodeStrict(doc, &o)
		ms.deployments = append(ms.deployments, o)
	case "v1 Service":
		var o corev1.Service
		err = decodeStrict(doc, &o)
		ms.services = append(ms.services, o)
	case "v1 ConfigMap":
		var o corev1.ConfigMap
		err = decodeStrict(doc, &o)
		ms.configMaps = append(ms.configMaps, o)
	case "v1 Secret":
		var o corev1.Secret
		err = decodeStrict(doc, &o)
		ms.secrets = append(ms.secrets, o)
	case "v1 Namespace":
		var o corev1.Namespace
		err = decodeStrict(doc, &o)
	case "v1 ServiceAccount":
		var o corev1.ServiceAccount
		err = decodeStrict(doc, &o)
		ms.serviceAccounts = append(ms.serviceAccounts, o)
	case "policy/v1 PodDisruptionBudget":
		var o policyv1.PodDisruptionBudget
		err = decodeStrict(doc, &o)
	case "networking.k8s.io/v1 NetworkPolicy":
		var o networkingv1.NetworkPolicy
		err = decodeStrict(doc, &o)
		ms.networkPolicies[file+"/"+o.Name] = o
	default:
		return fmt.Errorf("kind %q (%s) is not one this test knows: add its API type", head.Kind, head.APIVersion)
	}
	return err
}

// documents splits a multi-document YAML file.
func documents(raw []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func loadManifests(t *testing.T) *manifests {
	t.Helper()
	ms := &manifests{networkPolicies: map[string]networkingv1.NetworkPolicy{}}
	files, _ := filepath.Glob("kubernetes/*.yaml")
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		ms.files = append(ms.files, filepath.Base(f))
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range documents(raw) {
			if err := ms.decodeObject(filepath.Base(f), doc); err != nil {
				t.Errorf("%s (document %d): %v", f, i+1, err)
			}
		}
	}
	return ms
}

func TestKubernetes_ManifestsDecodeStrictlyIntoTheAPITypes(t *testing.T) {
	ms := loadManifests(t)
	if len(ms.deployments) != 2 || len(ms.services) != 2 || len(ms.configMaps) != 1 || len(ms.networkPolicies) != 3 {
		t.Errorf("decoded %d deployments, %d services, %d config maps, %d network policies; want 2, 2, 1, 3",
			len(ms.deployments), len(ms.services), len(ms.configMaps), len(ms.networkPolicies))
	}
	// The check itself: a misspelt field fails.
	raw, err := os.ReadFile("kubernetes/deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(raw, []byte("terminationGracePeriodSeconds"), []byte("terminationGracePeriodSecond"), 1)
	var d appsv1.Deployment
	if err := decodeStrict(bad, &d); err == nil || !strings.Contains(err.Error(), "terminationGracePeriodSecond") {
		t.Errorf("a misspelt field decoded: %v", err)
	}
}

// checklist is deploy/README.md's "Before you deploy" section.
func checklist(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "## Before you deploy")
	if i < 0 {
		t.Fatal(`deploy/README.md has no "## Before you deploy" section`)
	}
	return s[i:]
}

// createdSecretKeys returns the keys a checklist's
// `kubectl create secret generic NAME --from-literal=K=… --from-file=K=…`
// gives the Secret name, or nil when the checklist does not create it.
func createdSecretKeys(list, name string) []string {
	re := regexp.MustCompile("kubectl create secret generic " + regexp.QuoteMeta(name) + "((?: +--from-(?:literal|file)=[^ `]+(?: [^-`][^ `]*)*)+)")
	m := re.FindStringSubmatch(list)
	if m == nil {
		return nil
	}
	var keys []string
	for _, k := range regexp.MustCompile(`--from-(?:literal|file)=([A-Za-z0-9_.-]+)=`).FindAllStringSubmatch(m[1], -1) {
		keys = append(keys, k[1])
	}
	return keys
}

// TestKubernetes_EveryReferenceResolves follows every name a manifest
// uses: service account, ConfigMap, Secret (and its keys), image, the
// environment variables and files the keybroker configuration needs, the
// Redis it names, and the Vault paths the policy must grant.
func TestKubernetes_EveryReferenceResolves(t *testing.T) {
	ms := loadManifests(t)
	list := checklist(t)
	shippedSecret := func(name string) []string {
		for _, s := range ms.secrets {
			if s.Name == name {
				var keys []string
				for k := range s.StringData {
					keys = append(keys, k)
				}
				for k := range s.Data {
					keys = append(keys, k)
				}
				return keys
			}
		}
		return createdSecretKeys(list, name)
	}
	secretHas := func(where, name, key string) {
		keys := shippedSecret(name)
		switch {
		case keys == nil:
			t.Errorf("%s: Secret %q is neither shipped nor created in deploy/README.md's checklist", where, name)
		case key != "" && !slices.Contains(keys, key):
			t.Errorf("%s: Secret %q gets keys %v in the checklist, not %q", where, name, keys, key)
		}
	}
	kust := load(t, "kustomization.yaml")
	var kustImages []string
	for _, im := range m(kust, "images").([]any) {
		kustImages = append(kustImages, m(im, "name").(string))
	}
	var resources []string
	for _, r := range m(kust, "resources").([]any) {
		resources = append(resources, r.(string))
	}
	for _, f := range ms.files {
		if !slices.Contains(resources, f) && f != "networkpolicy-egress-proxy.yaml" {
			t.Errorf("kustomization.yaml does not apply %s", f)
		}
	}
	for _, r := range resources {
		if !slices.Contains(ms.files, r) {
			t.Errorf("kustomization.yaml applies %s, which is not shipped", r)
		}
	}
	if !strings.Contains(list, "kustomize edit set image keybroker=") {
		t.Error("the checklist does not say how to set the image")
	}

	// mounted is every file a volume puts in a container: path -> volume.
	for _, d := range ms.deployments {
		pod := d.Spec.Template.Spec
		if pod.ServiceAccountName != "" && !slices.ContainsFunc(ms.serviceAccounts, func(s corev1.ServiceAccount) bool { return s.Name == pod.ServiceAccountName }) {
			t.Errorf("%s: service account %q is not shipped", d.Name, pod.ServiceAccountName)
		}
		volumes := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = v
			switch {
			case v.ConfigMap != nil:
				if !slices.ContainsFunc(ms.configMaps, func(c corev1.ConfigMap) bool { return c.Name == v.ConfigMap.Name }) {
					t.Errorf("%s: ConfigMap %q is not shipped", d.Name, v.ConfigMap.Name)
				}
			case v.Secret != nil:
				secretHas(d.Name+" volume "+v.Name, v.Secret.SecretName, "")
				for _, it := range v.Secret.Items {
					secretHas(d.Name+" volume "+v.Name, v.Secret.SecretName, it.Key)
				}
			}
		}
		for _, c := range pod.Containers {
			if c.Image == "keybroker" && !slices.Contains(kustImages, c.Image) {
				t.Errorf("%s: image %q is not set by kustomization.yaml", d.Name, c.Image)
			}
			env := map[string]bool{}
			for _, e := range c.Env {
				env[e.Name] = true
				if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
					secretHas(d.Name+" env "+e.Name, r.SecretKeyRef.Name, r.SecretKeyRef.Key)
				}
			}
			files := map[string]bool{}
			for _, vm := range c.VolumeMounts {
				v, ok := volumes[vm.Name]
				if !ok {
					t.Errorf("%s: mount %q names no volume", d.Name, vm.Name)
					continue
				}
				switch {
				case v.ConfigMap != nil:
					for _, cm := range ms.configMaps {
						for k := range cm.Data {
							if cm.Name == v.ConfigMap.Name {
								files[vm.MountPath+"/"+k] = true
							}
						}
					}
				case v.Secret != nil && len(v.Secret.Items) > 0:
					for _, it := range v.Secret.Items {
						files[vm.MountPath+"/"+it.Path] = true
					}
				case v.Secret != nil:
					for _, k := range shippedSecret(v.Secret.SecretName) {
						files[vm.MountPath+"/"+k] = true
					}
				}
			}
			if c.Name != "keybroker" {
				continue
			}
			if len(c.Args) != 3 || !files[c.Args[2]] {
				t.Errorf("keybroker's -config %v is not a mounted file (%v)", c.Args, files)
			}
			text := ms.configMaps[0].Data["config.yaml"]
			for _, v := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(text, -1) {
				if !env[v[1]] {
					t.Errorf("the config needs ${%s}; the keybroker container does not set it", v[1])
				}
			}
			for _, f := range regexp.MustCompile(`(?:ca_file|password_file|jwks_file|token_file|path): (/etc/[^\s,}]+)`).FindAllStringSubmatch(text, -1) {
				if !files[f[1]] {
					t.Errorf("the config reads %s; no volume puts it there", f[1])
				}
			}
		}
	}
	cfg := keybrokerConfig(t)
	host, _, _ := strings.Cut(cfg.RateLimit.Redis.Address, ":")
	if !slices.ContainsFunc(ms.services, func(s corev1.Service) bool { return s.Name == host }) {
		t.Errorf("ratelimit.redis.address names %q; no Service of that name is shipped", host)
	}
	checkVaultPaths(t, configVaultPaths(cfg))
}

func TestKubernetes_RedisAdmitsOnlyKeybroker(t *testing.T) {
	ms := loadManifests(t)
	np, ok := ms.networkPolicies["networkpolicy-redis.yaml/keybroker-redis"]
	if !ok {
		t.Fatal("no NetworkPolicy keybroker-redis")
	}
	if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "keybroker-redis" || len(np.Spec.Ingress) != 1 ||
		len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].PodSelector == nil ||
		np.Spec.Ingress[0].From[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "keybroker" ||
		np.Spec.Ingress[0].From[0].NamespaceSelector != nil || len(np.Spec.Egress) != 0 ||
		!slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
		t.Errorf("the Redis policy must admit keybroker's pods only, and allow no egress: %+v", np.Spec)
	}
	for _, d := range ms.deployments {
		if d.Name != "keybroker-redis" {
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		if !slices.Contains(c.Args, "/etc/redis/redis.conf") || slices.ContainsFunc(c.Args, func(a string) bool { return strings.Contains(a, "requirepass") }) {
			t.Errorf("Redis must read requirepass from the Secret's redis.conf, never from its arguments: %v", c.Args)
		}
	}
}

// checkVaultPaths: every Vault path the config reads is granted (data and
// metadata) by the policy that setup.sh writes.
func checkVaultPaths(t *testing.T, paths []string) {
	t.Helper()
	policy, err := os.ReadFile("vault/keybroker-policy.hcl")
	if err != nil {
		t.Fatal(err)
	}
	setup, err := os.ReadFile("vault/setup.sh")
	if err != nil || !strings.Contains(string(setup), "keybroker-policy.hcl") {
		t.Errorf("setup.sh does not write keybroker-policy.hcl: %v", err)
	}
	if len(paths) < 3 {
		t.Errorf("only %d Vault paths found: %v", len(paths), paths)
	}
	for _, p := range paths {
		mount, rest, _ := strings.Cut(p, "/")
		for _, want := range []string{mount + "/data/" + rest, mount + "/metadata/" + rest} {
			if !strings.Contains(string(policy), `path "`+want+`"`) {
				t.Errorf("the Vault policy does not grant %s", want)
			}
		}
	}
}

// configVaultPaths lists mount/path of every Vault credential a config reads.
func configVaultPaths(cfg *config.Config) []string {
	var out []string
	for _, u := range cfg.Upstreams {
		if v := u.Credential.Vault; v != nil {
			out = append(out, v.Mount+"/"+v.Path)
		}
	}
	if s := cfg.Audit.Signing; s != nil && s.Credential.Vault != nil {
		out = append(out, s.Credential.Vault.Mount+"/"+s.Credential.Vault.Path)
	}
	return out
}

// unitLines returns the values of a systemd unit's key, in order.
func unitLines(unit, key string) []string {
	var out []string
	for _, l := range strings.Split(unit, "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			out = append(out, v)
		}
	}
	return out
}

// TestSystemd_EveryReferenceResolves: the unit needs no account made by
// hand, its environment file and credential are in the checklist, and the
// config it starts has every variable in the environment file's example.
func TestSystemd_EveryReferenceResolves(t *testing.T) {
	raw, err := os.ReadFile("systemd/keybroker.service")
	if err != nil {
		t.Fatal(err)
	}
	unit := string(raw)
	list := checklist(t)
	if len(unitLines(unit, "User")) > 0 || !slices.Contains(unitLines(unit, "DynamicUser"), "yes") {
		t.Error("the unit must run as DynamicUser=yes (no account made by hand)")
	}
	envFiles := unitLines(unit, "EnvironmentFile")
	if len(envFiles) != 1 || !strings.Contains(list, envFiles[0]) {
		t.Errorf("EnvironmentFile %v is not in the checklist", envFiles)
	}
	example, err := os.ReadFile("systemd/keybroker.env.example")
	if err != nil {
		t.Fatal(err)
	}
	provided := map[string]bool{"CREDENTIALS_DIRECTORY": true} // set by systemd for LoadCredential
	for _, l := range strings.Split(string(example), "\n") {
		if k, _, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			provided[k] = true
			if !strings.Contains(list, k) {
				t.Errorf("the checklist does not mention %s", k)
			}
		}
	}
	creds := map[string]string{}
	for _, c := range unitLines(unit, "LoadCredential") {
		name, path, _ := strings.Cut(c, ":")
		creds[name] = path
		if !strings.Contains(list, path) {
			t.Errorf("LoadCredential %s from %s: the checklist does not say to install it", name, path)
		}
	}
	text, err := os.ReadFile("systemd/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`).FindAllStringSubmatch(string(text), -1) {
		if !provided[v[1]] {
			t.Errorf("systemd/config.yaml needs ${%s}; keybroker.env.example does not set it", v[1])
		}
	}
	for _, c := range regexp.MustCompile(`\$\{CREDENTIALS_DIRECTORY\}/([A-Za-z0-9_.-]+)`).FindAllStringSubmatch(string(text), -1) {
		if _, ok := creds[c[1]]; !ok {
			t.Errorf("the config reads credential %s; the unit does not load it", c[1])
		}
	}
	exec := unitLines(unit, "ExecStart")
	if len(exec) != 1 || !strings.HasSuffix(exec[0], " --config /etc/keybroker/config.yaml") || !strings.Contains(list, "/etc/keybroker/config.yaml") {
		t.Errorf("ExecStart %v: its config is not installed by the checklist", exec)
	}
	cfg, err := config.Parse(text, envOf(t))
	if err != nil && !strings.Contains(err.Error(), "cannot read") {
		t.Fatalf("systemd/config.yaml does not validate: %v", err)
	}
	if cfg != nil {
		checkVaultPaths(t, configVaultPaths(cfg))
	}
	logs := unitLines(unit, "LogsDirectory")
	if cfg != nil && (len(logs) != 1 || !strings.HasPrefix(cfg.Audit.Path, "/var/log/"+logs[0]+"/")) {
		t.Errorf("the audit trail %q is not in the unit's LogsDirectory %v", cfg.Audit.Path, logs)
	}
}

// TestDockerfile_MatchesTheUnitAndTheManifests: one binary path and one
// command line in the image, the unit and the Deployment.
func TestDockerfile_MatchesTheUnitAndTheManifests(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(raw)
	jsonList := func(directive string) []string {
		m := regexp.MustCompile(`(?m)^` + directive + ` (\[.*\])$`).FindStringSubmatch(df)
		if m == nil {
			t.Fatalf("Dockerfile has no %s [...]", directive)
		}
		var l []string
		if err := json.Unmarshal([]byte(m[1]), &l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	entry, cmd := jsonList("ENTRYPOINT"), jsonList("CMD")
	copyTo := regexp.MustCompile(`(?m)^COPY --from=build \S+ (\S+)$`).FindStringSubmatch(df)
	if len(entry) != 1 || copyTo == nil || copyTo[1] != entry[0] {
		t.Errorf("the image's entrypoint %v is not the binary it copies (%v)", entry, copyTo)
	}
	unit, err := os.ReadFile("systemd/keybroker.service")
	if err != nil {
		t.Fatal(err)
	}
	exec := unitLines(string(unit), "ExecStart")
	if len(exec) != 1 || exec[0] != strings.Join(append(entry, cmd...), " ") {
		t.Errorf("unit ExecStart %v differs from the image's %v %v", exec, entry, cmd)
	}
	for _, d := range loadManifests(t).deployments {
		if d.Name == "keybroker" && !slices.Equal(d.Spec.Template.Spec.Containers[0].Args, cmd) {
			t.Errorf("the Deployment's args %v differ from the image's CMD %v", d.Spec.Template.Spec.Containers[0].Args, cmd)
		}
	}
	readme, err := os.ReadFile("README.md")
	if err != nil || !strings.Contains(string(readme), "docker push REGISTRY/keybroker") {
		t.Error("deploy/README.md does not say how to build and push the image")
	}
}

// TestShippedConfigsHoldNoKeyHash: every key_sha256 in a file that ships
// comes from the environment.
func TestShippedConfigsHoldNoKeyHash(t *testing.T) {
	files := []string{"../config.example.yaml", "../dev/keybroker.yaml", "kubernetes/configmap.yaml", "systemd/config.yaml"}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, m := range regexp.MustCompile(`key_sha256:\s*(\S+)`).FindAllStringSubmatch(string(raw), -1) {
			n++
			if !regexp.MustCompile(`^\$\{[A-Z0-9_]+\}$`).MatchString(m[1]) {
				t.Errorf("%s: key_sha256 %s is not a ${VARIABLE}", f, m[1])
			}
		}
		if n == 0 {
			t.Errorf("%s: no key_sha256 found (is the test still looking at the right files?)", f)
		}
	}
}

// TestKubernetes_ExampleCallerMatchesItsEntry: the example caller's
// projected token is what its callers: entry in configmap.yaml expects:
// audience, subject (namespace and service account), the namespace
// claim, and a namespace the NetworkPolicy admits.
func TestKubernetes_ExampleCallerMatchesItsEntry(t *testing.T) {
	raw, err := os.ReadFile("kubernetes/example-caller/soar-workflows.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ns corev1.Namespace
	var sa corev1.ServiceAccount
	var dep appsv1.Deployment
	for i, doc := range documents(raw) {
		var head struct{ Kind string }
		if err := sigsyaml.Unmarshal(doc, &head); err != nil {
			t.Fatal(err)
		}
		var out any
		switch head.Kind {
		case "Namespace":
			out = &ns
		case "ServiceAccount":
			out = &sa
		case "Deployment":
			out = &dep
		default:
			t.Fatalf("document %d: kind %q", i+1, head.Kind)
		}
		if err := decodeStrict(doc, out); err != nil {
			t.Errorf("document %d: %v", i+1, err)
		}
	}
	pod := dep.Spec.Template.Spec
	if pod.ServiceAccountName != sa.Name || dep.Namespace != ns.Name || sa.Namespace != ns.Name {
		t.Errorf("service account %s/%s, deployment in %s, namespace %s", sa.Namespace, sa.Name, dep.Namespace, ns.Name)
	}
	if ns.Labels["keybroker-client"] != "true" {
		t.Error("the caller's namespace lacks keybroker-client=true: networkpolicy.yaml would not admit it")
	}
	var audience string
	for _, v := range pod.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ServiceAccountToken != nil {
					audience = s.ServiceAccountToken.Audience
				}
			}
		}
	}
	var entry *config.JWT
	for _, c := range keybrokerConfig(t).Callers {
		if c.JWT != nil && c.JWT.Subject == "system:serviceaccount:"+ns.Name+":"+sa.Name {
			entry = c.JWT
		}
	}
	if entry == nil {
		t.Fatalf("configmap.yaml has no caller with subject system:serviceaccount:%s:%s", ns.Name, sa.Name)
	}
	if entry.Audience != audience || entry.Claims["/kubernetes.io/namespace"] != ns.Name {
		t.Errorf("entry audience %q, claims %v; the projected token's audience %q, namespace %q", entry.Audience, entry.Claims, audience, ns.Name)
	}
}
