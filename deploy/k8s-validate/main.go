// Command k8s-validate checks Kubernetes manifests strictly against the Kubernetes API types.
//
//	helm template legato helm/legato | k8s-validate          # reads standard input
//	k8s-validate rendered.yaml other.yaml                     # or files
//
// It reads multi-document YAML streams (what `helm template` prints), and decodes every object
// into its Go type from k8s.io/api (apps/v1 Deployment, v1 Service, ConfigMap, Secret,
// ServiceAccount, batch/v1 Job, policy/v1 PodDisruptionBudget) with sigs.k8s.io/json's strict
// mode: an unknown field, a duplicate field or a value of the wrong type (a string where an int32
// goes, a malformed resource quantity) is an error naming the object and the field path. A kind
// it has no type for is an error too, so nothing passes unchecked. The ServiceMonitor of the
// Prometheus operator (monitoring.coreos.com/v1, a CRD whose Go type lives outside k8s.io/api)
// is decoded, just as strictly, into the hand-written subset of its type in servicemonitor.go.
//
// A few checks the API server makes and decoding does not are made as well: names are DNS-1123
// subdomains (labels for Services), a Deployment's or Job's selector matches its pod template's
// labels, container and port names are unique and valid, probes name a port the container has.
//
// Exit status: 0 when every object is valid, 1 when one is not (each problem on stderr as
// "<source>: <Kind>/<name>: <problem>"), 2 on a usage or read error.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// newObject returns a pointer to an empty object of the Go type of apiVersion/kind, or nil.
func newObject(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "v1/Service":
		return &corev1.Service{}
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		return &ServiceMonitor{}
	}
	return nil
}

var sourceComment = regexp.MustCompile(`(?m)^# Source: (.+)$`)

type checker struct {
	problems int
	objects  int
	kinds    map[string]int
}

func (c *checker) fail(where, format string, args ...any) {
	c.problems++
	fmt.Fprintf(os.Stderr, "%s: %s\n", where, fmt.Sprintf(format, args...))
}

// document checks one YAML document of the stream `stream` (its 1-based index n).
func (c *checker) document(stream string, n int, doc []byte) {
	where := fmt.Sprintf("%s: document %d", stream, n)
	if m := sourceComment.FindSubmatch(doc); m != nil {
		where = fmt.Sprintf("%s (%s)", where, m[1])
	}
	// YAMLToJSONStrict refuses duplicate keys; an empty document (comments only) is null.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		c.fail(where, "not valid YAML: %v", err)
		return
	}
	js = bytes.TrimSpace(js)
	if len(js) == 0 || string(js) == "null" {
		return
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &head); err != nil {
		c.fail(where, "not a Kubernetes object: %v", err)
		return
	}
	if head.APIVersion == "" || head.Kind == "" {
		c.fail(where, "apiVersion and kind are required (got %q, %q)", head.APIVersion, head.Kind)
		return
	}
	where = fmt.Sprintf("%s: %s/%s", where, head.Kind, head.Metadata.Name)
	obj := newObject(head.APIVersion, head.Kind)
	if obj == nil {
		c.fail(where, "no Go type known for apiVersion %q kind %q: cannot validate it", head.APIVersion, head.Kind)
		return
	}
	strictErrs, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		c.fail(where, "%v", err)
		return
	}
	for _, e := range strictErrs {
		c.fail(where, "%v", e)
	}
	if len(strictErrs) > 0 {
		return
	}
	c.objects++
	c.kinds[head.Kind]++
	for _, p := range semantic(obj) {
		c.fail(where, "%s", p)
	}
}

// semantic: the API server's checks that strict decoding does not make, for the kinds rendered here.
func semantic(obj any) []string {
	var out []string
	name := func(m metav1.ObjectMeta, label bool) {
		if m.Name == "" {
			out = append(out, "metadata.name: required")
			return
		}
		check := validation.IsDNS1123Subdomain
		if label {
			check = validation.IsDNS1123Label
		}
		for _, msg := range check(m.Name) {
			out = append(out, "metadata.name: "+msg)
		}
		for k, v := range m.Labels {
			for _, msg := range validation.IsQualifiedName(k) {
				out = append(out, fmt.Sprintf("metadata.labels[%s]: %s", k, msg))
			}
			for _, msg := range validation.IsValidLabelValue(v) {
				out = append(out, fmt.Sprintf("metadata.labels[%s]: %s", k, msg))
			}
		}
	}
	selects := func(path string, sel *metav1.LabelSelector, tmpl map[string]string, required bool) {
		if sel == nil {
			if required {
				out = append(out, path+": required")
			}
			return
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			out = append(out, fmt.Sprintf("%s: %v", path, err))
			return
		}
		if required && s.Empty() {
			out = append(out, path+": empty selector")
		}
		if tmpl != nil && !s.Matches(labels.Set(tmpl)) {
			out = append(out, fmt.Sprintf("%s: does not match the pod template's labels %v", path, tmpl))
		}
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		name(o.ObjectMeta, false)
		selects("spec.selector", o.Spec.Selector, o.Spec.Template.Labels, true)
		out = append(out, podSpec("spec.template.spec", &o.Spec.Template.Spec)...)
	case *appsv1.StatefulSet:
		name(o.ObjectMeta, false)
		selects("spec.selector", o.Spec.Selector, o.Spec.Template.Labels, true)
		out = append(out, podSpec("spec.template.spec", &o.Spec.Template.Spec)...)
	case *batchv1.Job:
		name(o.ObjectMeta, false)
		if o.Spec.Selector != nil {
			selects("spec.selector", o.Spec.Selector, o.Spec.Template.Labels, true)
		}
		rp := o.Spec.Template.Spec.RestartPolicy
		if rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyOnFailure {
			out = append(out, fmt.Sprintf("spec.template.spec.restartPolicy: %q: a Job's must be Never or OnFailure", rp))
		}
		out = append(out, podSpec("spec.template.spec", &o.Spec.Template.Spec)...)
	case *corev1.Service:
		name(o.ObjectMeta, true)
		if len(o.Spec.Ports) == 0 {
			out = append(out, "spec.ports: at least one port is required")
		}
		seen := map[string]bool{}
		for i, p := range o.Spec.Ports {
			if len(o.Spec.Ports) > 1 && p.Name == "" {
				out = append(out, fmt.Sprintf("spec.ports[%d].name: required when there are several ports", i))
			}
			if seen[p.Name] {
				out = append(out, fmt.Sprintf("spec.ports[%d].name: %q used twice", i, p.Name))
			}
			seen[p.Name] = true
			if p.Port < 1 || p.Port > 65535 {
				out = append(out, fmt.Sprintf("spec.ports[%d].port: %d is not a port", i, p.Port))
			}
		}
	case *policyv1.PodDisruptionBudget:
		name(o.ObjectMeta, false)
		selects("spec.selector", o.Spec.Selector, nil, true)
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			out = append(out, "spec: exactly one of minAvailable and maxUnavailable is required")
		}
	case *corev1.ConfigMap:
		name(o.ObjectMeta, false)
	case *corev1.Secret:
		name(o.ObjectMeta, false)
	case *corev1.ServiceAccount:
		name(o.ObjectMeta, false)
	case *ServiceMonitor:
		name(o.ObjectMeta, false)
		out = append(out, o.validate()...)
	}
	return out
}

func podSpec(path string, s *corev1.PodSpec) []string {
	var out []string
	if len(s.Containers) == 0 {
		out = append(out, path+".containers: at least one container is required")
	}
	volumes := map[string]bool{}
	for i, v := range s.Volumes {
		if volumes[v.Name] {
			out = append(out, fmt.Sprintf("%s.volumes[%d].name: %q used twice", path, i, v.Name))
		}
		volumes[v.Name] = true
	}
	names := map[string]bool{}
	all := append(append([]corev1.Container{}, s.InitContainers...), s.Containers...)
	for i, c := range all {
		cp := fmt.Sprintf("%s.containers[%d]", path, i-len(s.InitContainers))
		if i < len(s.InitContainers) {
			cp = fmt.Sprintf("%s.initContainers[%d]", path, i)
		}
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			out = append(out, fmt.Sprintf("%s.name: %q: %s", cp, c.Name, msg))
		}
		if names[c.Name] {
			out = append(out, fmt.Sprintf("%s.name: %q used twice", cp, c.Name))
		}
		names[c.Name] = true
		if c.Image == "" {
			out = append(out, cp+".image: required")
		}
		ports := map[string]bool{}
		for j, p := range c.Ports {
			if p.Name != "" {
				for _, msg := range validation.IsValidPortName(p.Name) {
					out = append(out, fmt.Sprintf("%s.ports[%d].name: %q: %s", cp, j, p.Name, msg))
				}
				if ports[p.Name] {
					out = append(out, fmt.Sprintf("%s.ports[%d].name: %q used twice", cp, j, p.Name))
				}
				ports[p.Name] = true
			}
			if p.ContainerPort < 1 || p.ContainerPort > 65535 {
				out = append(out, fmt.Sprintf("%s.ports[%d].containerPort: %d is not a port", cp, j, p.ContainerPort))
			}
		}
		for j, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				out = append(out, fmt.Sprintf("%s.volumeMounts[%d].name: no volume %q in the pod", cp, j, m.Name))
			}
		}
		for j, e := range c.Env {
			if e.Value != "" && e.ValueFrom != nil {
				out = append(out, fmt.Sprintf("%s.env[%d]: value and valueFrom together", cp, j))
			}
		}
		probe := func(what string, p *corev1.Probe) {
			if p == nil || p.HTTPGet == nil {
				return
			}
			if port := p.HTTPGet.Port; port.Type == intstr.String && !ports[port.StrVal] {
				out = append(out, fmt.Sprintf("%s.%s.httpGet.port: the container has no port named %q", cp, what, port.StrVal))
			}
		}
		probe("livenessProbe", c.LivenessProbe)
		probe("readinessProbe", c.ReadinessProbe)
		probe("startupProbe", c.StartupProbe)
	}
	return out
}

func (c *checker) stream(name string, r io.Reader) error {
	reader := k8syaml.NewYAMLReader(bufio.NewReader(r))
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: reading document %d: %w", name, n, err)
		}
		c.document(name, n, doc)
	}
}

func main() {
	c := &checker{kinds: map[string]int{}}
	args := os.Args[1:]
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Println("usage: k8s-validate [FILE...]   (no FILE or -: standard input)")
		return
	}
	if len(args) == 0 {
		args = []string{"-"}
	}
	for _, a := range args {
		var err error
		if a == "-" {
			err = c.stream("<stdin>", os.Stdin)
		} else {
			f, ferr := os.Open(a)
			if ferr != nil {
				fmt.Fprintln(os.Stderr, ferr)
				os.Exit(2)
			}
			err = c.stream(a, f)
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	var kinds []string
	for k, n := range c.kinds {
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	if c.problems > 0 {
		fmt.Fprintf(os.Stderr, "k8s-validate: %d problem(s)\n", c.problems)
		os.Exit(1)
	}
	if c.objects == 0 {
		fmt.Fprintln(os.Stderr, "k8s-validate: no object in the input")
		os.Exit(1)
	}
	sort.Strings(kinds)
	fmt.Printf("k8s-validate: %d objects valid (%s)\n", c.objects, strings.Join(kinds, ", "))
}
