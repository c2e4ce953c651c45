// Command kubestandin is a small Kubernetes API stand-in for the end-to-end
// and compatibility tests, over HTTPS on 127.0.0.1 with a CA it makes at
// start-up (client-go's in-cluster config always speaks HTTPS).
//
// It serves what coffer and the vault, openbao and aws providers ask of the
// API server:
//
//	GET  /api/v1/namespaces/NS/serviceaccounts/NAME   (annotations: IRSA role)
//	GET  /api/v1/namespaces/NS/pods/NAME              (spec.nodeName)
//	GET  /api/v1/nodes/NAME                           (labels: region)
//	GET  /api/v1/namespaces/NS/secrets/NAME           (the HMAC key Secret)
//	POST /api/v1/namespaces/NS/secrets                (creates it; 409 if present)
//
// Anything else is a 404 Status. Objects come from a JSON file:
//
//	{"serviceAccounts": [{"namespace": "shop", "name": "web", "annotations": {...}}],
//	 "pods": [{"namespace": "shop", "name": "web-0", "uid": "...", "nodeName": "node-1"}],
//	 "nodes": [{"name": "node-1", "labels": {...}}]}
//
// With -front NAME=UPSTREAM (repeatable) it also terminates TLS for host
// NAME on -front-addr and passes each request on to UPSTREAM (http, on
// 127.0.0.1): the aws provider's STS client has a fixed https endpoint, so
// the compatibility run resolves that name to 127.0.0.1 for the provider
// and fronts moto here.
//
// On start it writes DIR/ca.crt (PEM), DIR/kubeconfig (for coffer) and
// DIR/addr (host:port), then serves until SIGTERM/SIGINT. Every request is
// logged to stdout as one JSON line {"method", "path", "status"}.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
)

type objectMeta struct {
	Namespace   string            `json:"namespace,omitempty"`
	Name        string            `json:"name"`
	UID         string            `json:"uid,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
}

type config struct {
	ServiceAccounts []objectMeta `json:"serviceAccounts"`
	Pods            []struct {
		objectMeta
		NodeName string `json:"nodeName"`
	} `json:"pods"`
	Nodes []objectMeta `json:"nodes"`
}

type frontFlags []string

func (f *frontFlags) String() string     { return strings.Join(*f, ",") }
func (f *frontFlags) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	cfgPath := flag.String("config", "", "objects JSON file")
	addr := flag.String("addr", "127.0.0.1:0", "listen address of the API server")
	dir := flag.String("dir", "", "directory for ca.crt, kubeconfig and addr")
	frontAddr := flag.String("front-addr", "127.0.0.1:443", "listen address of the TLS fronts")
	var fronts frontFlags
	flag.Var(&fronts, "front", "NAME=UPSTREAM: terminate TLS for NAME and pass requests to UPSTREAM (repeatable)")
	flag.Parse()
	if *dir == "" || *cfgPath == "" {
		log.Fatal("kubestandin needs -config and -dir")
	}
	if err := run(*cfgPath, *addr, *dir, *frontAddr, fronts); err != nil {
		log.Fatal("kubestandin: ", err)
	}
}

func run(cfgPath, addr, dir, frontAddr string, fronts []string) error {
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var cfg config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return fmt.Errorf("%s: %w", cfgPath, err)
	}
	hosts := []string{"127.0.0.1", "localhost"}
	upstreams := map[string]*url.URL{}
	for _, f := range fronts {
		name, up, ok := strings.Cut(f, "=")
		u, err := url.Parse(up)
		if !ok || err != nil || u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") {
			return fmt.Errorf("-front %q: want NAME=http://127.0.0.1:PORT", f)
		}
		hosts = append(hosts, name)
		upstreams[name] = u
	}
	caPEM, cert, err := makeCert(hosts)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), caPEM, 0o644); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(ln.Addr().String(), "127.0.0.1:") {
		return fmt.Errorf("refusing to listen on %s: 127.0.0.1 only", ln.Addr())
	}
	tlsCfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	api := &apiServer{cfg: cfg, secrets: map[string]json.RawMessage{}}
	srv := &http.Server{Handler: logged(api), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	servers := []*http.Server{srv}
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()

	if len(upstreams) > 0 {
		fln, err := net.Listen("tcp", frontAddr)
		if err != nil {
			return fmt.Errorf("front listener %s: %w", frontAddr, err)
		}
		front := &http.Server{Handler: logged(frontHandler(upstreams)), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, front)
		go func() { errc <- front.ServeTLS(fln, "", "") }()
	}

	server := "https://" + ln.Addr().String()
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: %s
    certificate-authority: %s
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
current-context: standin
users:
- name: standin
  user:
    token: standin-token
`, server, filepath.Join(dir, "ca.crt"))
	if err := os.WriteFile(filepath.Join(dir, "kubeconfig"), []byte(kubeconfig), 0o600); err != nil {
		return err
	}
	// addr last: its presence tells the caller everything is ready.
	if err := os.WriteFile(filepath.Join(dir, "addr.tmp"), []byte(ln.Addr().String()), 0o644); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, "addr.tmp"), filepath.Join(dir, "addr")); err != nil {
		return err
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		_ = s.Shutdown(ctx)
	}
	return nil
}

type apiServer struct {
	cfg     config
	mu      sync.Mutex
	secrets map[string]json.RawMessage // "ns/name" -> Secret object
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 6 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces" && parts[4] == "serviceaccounts":
		for _, sa := range a.cfg.ServiceAccounts {
			if sa.Namespace == parts[3] && sa.Name == parts[5] {
				writeObject(w, http.StatusOK, map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": sa})
				return
			}
		}
	case r.Method == http.MethodGet && len(parts) == 6 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces" && parts[4] == "pods":
		for _, p := range a.cfg.Pods {
			if p.Namespace == parts[3] && p.Name == parts[5] {
				writeObject(w, http.StatusOK, map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": p.objectMeta, "spec": map[string]any{"nodeName": p.NodeName}})
				return
			}
		}
	case r.Method == http.MethodGet && len(parts) == 4 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "nodes":
		for _, n := range a.cfg.Nodes {
			if n.Name == parts[3] {
				writeObject(w, http.StatusOK, map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": n})
				return
			}
		}
	case r.Method == http.MethodGet && len(parts) == 6 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces" && parts[4] == "secrets":
		a.mu.Lock()
		s, ok := a.secrets[parts[3]+"/"+parts[5]]
		a.mu.Unlock()
		if ok {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(s)
			return
		}
	case r.Method == http.MethodPost && len(parts) == 5 && parts[0] == "api" && parts[1] == "v1" && parts[2] == "namespaces" && parts[4] == "secrets":
		a.createSecret(w, r, parts[3])
		return
	}
	status(w, http.StatusNotFound, "NotFound", fmt.Sprintf("%s %s not found", r.Method, r.URL.Path))
}

func (a *apiServer) createSecret(w http.ResponseWriter, r *http.Request, ns string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		status(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/vnd.kubernetes.protobuf") {
		// client-go sends built-in types as protobuf; answer in JSON, which
		// it accepts too.
		if body, err = protobufToJSON(body); err != nil {
			status(w, http.StatusBadRequest, "BadRequest", err.Error())
			return
		}
	}
	var obj map[string]any
	if err := json.Unmarshal(body, &obj); err != nil {
		status(w, http.StatusBadRequest, "BadRequest", err.Error())
		return
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if name == "" {
		status(w, http.StatusUnprocessableEntity, "Invalid", "metadata.name is required")
		return
	}
	meta["namespace"] = ns
	meta["uid"] = fmt.Sprintf("standin-%d", time.Now().UnixNano())
	meta["resourceVersion"] = "1"
	obj["apiVersion"], obj["kind"] = "v1", "Secret"
	out, _ := json.Marshal(obj)
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.secrets[ns+"/"+name]; ok {
		status(w, http.StatusConflict, "AlreadyExists", fmt.Sprintf("secrets %q already exists", name))
		return
	}
	a.secrets[ns+"/"+name] = out
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write(out)
}

// protobufToJSON decodes a protobuf-encoded core/v1 Secret.
func protobufToJSON(body []byte) ([]byte, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	obj, _, err := protobuf.NewSerializer(scheme, scheme).Decode(body, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("protobuf body: %w", err)
	}
	secret, ok := obj.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("protobuf body is a %T, not a Secret", obj)
	}
	return json.Marshal(secret)
}

func writeObject(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	writeObject(w, code, map[string]any{"apiVersion": "v1", "kind": "Status", "metadata": map[string]any{}, "status": "Failure", "message": msg, "reason": reason, "code": code})
}

func frontHandler(upstreams map[string]*url.URL) http.Handler {
	proxies := map[string]*httputil.ReverseProxy{}
	for name, u := range upstreams {
		proxies[name] = httputil.NewSingleHostReverseProxy(u)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		p, ok := proxies[host]
		if !ok {
			status(w, http.StatusMisdirectedRequest, "Misdirected", "no front for "+host)
			return
		}
		p.ServeHTTP(w, r)
	})
}

type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) { r.code = code; r.ResponseWriter.WriteHeader(code) }

var logMu sync.Mutex

func logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		line, _ := json.Marshal(map[string]any{"host": r.Host, "method": r.Method, "path": r.URL.Path, "status": rec.code})
		logMu.Lock()
		fmt.Println(string(line))
		logMu.Unlock()
	})
}

// makeCert: a throwaway CA and a server certificate for hosts signed by it.
func makeCert(hosts []string) ([]byte, tls.Certificate, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kubestandin CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kubestandin"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
