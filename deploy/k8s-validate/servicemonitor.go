package main

// The ServiceMonitor of the Prometheus operator (monitoring.coreos.com/v1), written by hand: its
// Go type is in github.com/prometheus-operator/prometheus-operator, not in k8s.io/api. These
// structs follow that type's JSON fields (pkg/apis/monitoring/v1, servicemonitor_types.go and
// types.go) for the fields a ServiceMonitor of a plain HTTP or TLS scrape uses; decoding is
// strict, so a misspelt field (or one of the operator's rarer fields, not listed here) is an
// error, and validate() checks the enums and patterns of the operator's CRD schema for them.

import (
	"fmt"
	"regexp"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

type ServiceMonitorSpec struct {
	JobLabel              string               `json:"jobLabel,omitempty"`
	TargetLabels          []string             `json:"targetLabels,omitempty"`
	PodTargetLabels       []string             `json:"podTargetLabels,omitempty"`
	Endpoints             []Endpoint           `json:"endpoints"`
	Selector              metav1.LabelSelector `json:"selector"`
	SelectorMechanism     *string              `json:"selectorMechanism,omitempty"`
	NamespaceSelector     NamespaceSelector    `json:"namespaceSelector,omitempty"`
	SampleLimit           *uint64              `json:"sampleLimit,omitempty"`
	ScrapeProtocols       []string             `json:"scrapeProtocols,omitempty"`
	TargetLimit           *uint64              `json:"targetLimit,omitempty"`
	LabelLimit            *uint64              `json:"labelLimit,omitempty"`
	LabelNameLengthLimit  *uint64              `json:"labelNameLengthLimit,omitempty"`
	LabelValueLengthLimit *uint64              `json:"labelValueLengthLimit,omitempty"`
	KeepDroppedTargets    *uint64              `json:"keepDroppedTargets,omitempty"`
	AttachMetadata        *AttachMetadata      `json:"attachMetadata,omitempty"`
	ScrapeClass           *string              `json:"scrapeClass,omitempty"`
	BodySizeLimit         *string              `json:"bodySizeLimit,omitempty"`
}

type NamespaceSelector struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

type AttachMetadata struct {
	Node *bool `json:"node,omitempty"`
}

type Endpoint struct {
	Port                 string                    `json:"port,omitempty"`
	TargetPort           *intstr.IntOrString       `json:"targetPort,omitempty"`
	Path                 string                    `json:"path,omitempty"`
	Scheme               string                    `json:"scheme,omitempty"`
	Params               map[string][]string       `json:"params,omitempty"`
	Interval             string                    `json:"interval,omitempty"`
	ScrapeTimeout        string                    `json:"scrapeTimeout,omitempty"`
	TLSConfig            *TLSConfig                `json:"tlsConfig,omitempty"`
	BearerTokenSecret    *corev1.SecretKeySelector `json:"bearerTokenSecret,omitempty"`
	Authorization        *SafeAuthorization        `json:"authorization,omitempty"`
	BasicAuth            *BasicAuth                `json:"basicAuth,omitempty"`
	HonorLabels          bool                      `json:"honorLabels,omitempty"`
	HonorTimestamps      *bool                     `json:"honorTimestamps,omitempty"`
	TrackTimestamps      *bool                     `json:"trackTimestampsStaleness,omitempty"`
	MetricRelabelConfigs []RelabelConfig           `json:"metricRelabelings,omitempty"`
	RelabelConfigs       []RelabelConfig           `json:"relabelings,omitempty"`
	FollowRedirects      *bool                     `json:"followRedirects,omitempty"`
	EnableHTTP2          *bool                     `json:"enableHttp2,omitempty"`
	FilterRunning        *bool                     `json:"filterRunning,omitempty"`
}

type SecretOrConfigMap struct {
	Secret    *corev1.SecretKeySelector    `json:"secret,omitempty"`
	ConfigMap *corev1.ConfigMapKeySelector `json:"configMap,omitempty"`
}

type TLSConfig struct {
	CA                 SecretOrConfigMap         `json:"ca,omitempty"`
	Cert               SecretOrConfigMap         `json:"cert,omitempty"`
	KeySecret          *corev1.SecretKeySelector `json:"keySecret,omitempty"`
	ServerName         *string                   `json:"serverName,omitempty"`
	InsecureSkipVerify *bool                     `json:"insecureSkipVerify,omitempty"`
	MinVersion         *string                   `json:"minVersion,omitempty"`
	MaxVersion         *string                   `json:"maxVersion,omitempty"`
	CAFile             string                    `json:"caFile,omitempty"`
	CertFile           string                    `json:"certFile,omitempty"`
	KeyFile            string                    `json:"keyFile,omitempty"`
}

type SafeAuthorization struct {
	Type        string                    `json:"type,omitempty"`
	Credentials *corev1.SecretKeySelector `json:"credentials,omitempty"`
}

type BasicAuth struct {
	Username corev1.SecretKeySelector `json:"username,omitempty"`
	Password corev1.SecretKeySelector `json:"password,omitempty"`
}

type RelabelConfig struct {
	SourceLabels []string `json:"sourceLabels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	TargetLabel  string   `json:"targetLabel,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// The CRD's pattern of a Prometheus duration ("30s", "1m30s").
var promDuration = regexp.MustCompile(`^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`)

var relabelActions = map[string]bool{"": true, "replace": true, "Replace": true, "keep": true, "Keep": true,
	"drop": true, "Drop": true, "hashmod": true, "HashMod": true, "labelmap": true, "LabelMap": true,
	"labeldrop": true, "LabelDrop": true, "labelkeep": true, "LabelKeep": true, "lowercase": true,
	"Lowercase": true, "uppercase": true, "Uppercase": true, "keepequal": true, "KeepEqual": true,
	"dropequal": true, "DropEqual": true}

func (m *ServiceMonitor) validate() []string {
	var out []string
	if len(m.Spec.Endpoints) == 0 {
		out = append(out, "spec.endpoints: at least one endpoint is required")
	}
	if _, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector); err != nil {
		out = append(out, fmt.Sprintf("spec.selector: %v", err))
	}
	relabels := func(path string, rs []RelabelConfig) {
		for i, r := range rs {
			if !relabelActions[r.Action] {
				out = append(out, fmt.Sprintf("%s[%d].action: %q is not a relabel action", path, i, r.Action))
			}
		}
	}
	for i, e := range m.Spec.Endpoints {
		p := fmt.Sprintf("spec.endpoints[%d]", i)
		if e.Port == "" && e.TargetPort == nil {
			out = append(out, p+": port (a Service port's name) or targetPort is required")
		}
		switch e.Scheme {
		case "", "http", "https", "HTTP", "HTTPS":
		default:
			out = append(out, fmt.Sprintf("%s.scheme: %q: must be http or https", p, e.Scheme))
		}
		for what, d := range map[string]string{"interval": e.Interval, "scrapeTimeout": e.ScrapeTimeout} {
			if d != "" && !promDuration.MatchString(d) {
				out = append(out, fmt.Sprintf("%s.%s: %q is not a Prometheus duration", p, what, d))
			}
		}
		relabels(p+".relabelings", e.RelabelConfigs)
		relabels(p+".metricRelabelings", e.MetricRelabelConfigs)
	}
	return out
}
