// Command driverclient mounts a SecretProviderClass through a provider socket
// with the Secrets Store CSI driver's own provider client
// (sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store), as the driver's
// NodePublishVolume does, and writes the files with the driver's own
// atomic writer (MountContent calls fileutil.WritePayloads).
//
// The same source is built once per driver version (e2e/setup.sh): against
// the module in go.mod (v1.6.0) and with -modfile against the older
// driver-v*.mod files, so each binary carries that release's client, its
// gRPC version and its way of dialing (socket path or "localhost" as the
// :authority).
//
// Usage:
//
//	driverclient mount -socket-dir DIR -request FILE -target DIR
//	driverclient version -socket-dir DIR -provider NAME
//	driverclient bench -socket-dir DIR -request FILE -target DIR -n N -c C
//	driverclient info
//
// The request file is JSON:
//
//	{"provider": "vault",                    // spec.provider
//	 "parameters": {"objects": "..."},       // spec.parameters
//	 "volumeContext": {"secretProviderClass": "...", "csi.storage.k8s.io/pod.name": "...", ...},
//	 "secrets": {"k": "v"}}                  // nodePublishSecretRef data, or null
//
// mount prints one JSON line: the driver version, the provider's
// runtime version (from Version, as the driver's health check asks), the
// outcome (ok, the driver's error reason, the gRPC status code and message),
// the object versions, and every file as the pod sees it (path, mode,
// contents in base64). It exits 0 whenever it could report, also for a
// refused mount; a non-zero exit means the program itself failed.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/status"
	secretsstore "sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store"
)

const driverModule = "sigs.k8s.io/secrets-store-csi-driver"

// filePermission is what the driver sends as MountRequest.permission:
// json.Marshal(os.FileMode(0644)) in NodePublishVolume.
const filePermission os.FileMode = 0o644

// The volume context key kubelet uses for the pod's service account tokens.
const tokensKey = "csi.storage.k8s.io/serviceAccount.tokens"

type request struct {
	Provider      string            `json:"provider"`
	Parameters    map[string]string `json:"parameters"`
	VolumeContext map[string]string `json:"volumeContext"`
	Secrets       map[string]string `json:"secrets"`
}

type file struct {
	Path     string `json:"path"`
	Mode     string `json:"mode"`
	Contents string `json:"contents"`
}

type report struct {
	Driver         string            `json:"driver"`
	GRPC           string            `json:"grpc"`
	Provider       string            `json:"provider"`
	RuntimeVersion string            `json:"runtimeVersion,omitempty"`
	OK             bool              `json:"ok"`
	ErrorReason    string            `json:"errorReason,omitempty"`
	Code           string            `json:"code,omitempty"`
	Message        string            `json:"message,omitempty"`
	ObjectVersions map[string]string `json:"objectVersions"`
	Files          []file            `json:"files"`
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "mount":
		err = mountCmd(os.Args[2:])
	case "version":
		err = versionCmd(os.Args[2:])
	case "bench":
		err = benchCmd(os.Args[2:])
	case "info":
		err = printJSON(map[string]string{"driver": moduleVersion(driverModule), "grpc": moduleVersion("google.golang.org/grpc"), "go": runtime.Version()})
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "driverclient:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: driverclient mount|version|bench|info [flags]")
	os.Exit(2)
}

// moduleVersion is the version of a module linked into this binary.
func moduleVersion(path string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range info.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(b))
	return err
}

func readRequest(path string) (*request, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r request
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("request %s: %w", path, err)
	}
	if r.Provider == "" {
		return nil, fmt.Errorf("request %s: no provider", path)
	}
	return &r, nil
}

// attributes builds MountRequest.attributes, secrets and permission exactly
// as NodePublishVolume does: the SecretProviderClass parameters, then every
// volume attribute kubelet sent copied over them, then the tokens; each
// JSON-encoded with encoding/json.
func (r *request) encode() (attributes, secrets, permission string, err error) {
	parameters := make(map[string]string, len(r.Parameters)+len(r.VolumeContext))
	maps.Copy(parameters, r.Parameters)
	maps.Copy(parameters, r.VolumeContext)
	if t, ok := r.Secrets[tokensKey]; ok {
		// Driver v1.6 also takes the tokens from the publish secrets.
		parameters[tokensKey] = t
	}
	a, err := json.Marshal(parameters)
	if err != nil {
		return "", "", "", err
	}
	s, err := json.Marshal(r.Secrets)
	if err != nil {
		return "", "", "", err
	}
	p, err := json.Marshal(filePermission)
	if err != nil {
		return "", "", "", err
	}
	return string(a), string(s), string(p), nil
}

func mountCmd(args []string) error {
	fl := flag.NewFlagSet("mount", flag.ExitOnError)
	socketDir := fl.String("socket-dir", "", "directory of provider sockets (the driver's --provider-volume)")
	reqPath := fl.String("request", "", "request JSON file")
	target := fl.String("target", "", "target directory (created if missing)")
	timeout := fl.Duration("timeout", 60*time.Second, "deadline of the whole mount")
	_ = fl.Parse(args)
	if *socketDir == "" || *reqPath == "" || *target == "" {
		return errors.New("mount needs -socket-dir, -request and -target")
	}
	req, err := readRequest(*reqPath)
	if err != nil {
		return err
	}
	attributes, secrets, permission, err := req.encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*target, 0o750); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	builder := secretsstore.NewPluginClientBuilder([]string{*socketDir})
	defer builder.Cleanup()
	rep := report{
		Driver:         moduleVersion(driverModule),
		GRPC:           moduleVersion("google.golang.org/grpc"),
		Provider:       req.Provider,
		ObjectVersions: map[string]string{},
		Files:          []file{},
	}
	client, err := builder.Get(ctx, req.Provider)
	if err != nil {
		rep.ErrorReason = "FailedToLookupProviderGRPCClient"
		rep.Message = err.Error()
		return printJSON(rep)
	}
	if v, err := secretsstore.Version(ctx, client); err == nil {
		rep.RuntimeVersion = v
	} else {
		rep.ErrorReason = "Version"
		rep.Code = status.Code(err).String()
		rep.Message = status.Convert(err).Message()
		return printJSON(rep)
	}
	versions, reason, err := secretsstore.MountContent(ctx, client, attributes, secrets, *target, permission, nil)
	if err != nil {
		rep.ErrorReason = reason
		if st, ok := status.FromError(err); ok {
			rep.Code = st.Code().String()
			rep.Message = st.Message()
		} else {
			rep.Message = err.Error()
		}
		return printJSON(rep)
	}
	rep.OK = true
	if versions != nil {
		rep.ObjectVersions = versions
	}
	files, err := readVolume(*target)
	if err != nil {
		return err
	}
	rep.Files = files
	return printJSON(rep)
}

// readVolume lists the files a pod sees in the volume: every regular file
// reached from the target directory, following the atomic writer's
// symlinks, but not its hidden ..data / ..timestamp entries.
func readVolume(target string) ([]file, error) {
	var out []file
	var walk func(dir, rel string) error
	walk = func(dir, rel string) error {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if rel == "" && strings.HasPrefix(e.Name(), "..") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			r := filepath.Join(rel, e.Name())
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			if st.IsDir() {
				if err := walk(p, r); err != nil {
					return err
				}
				continue
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out = append(out, file{
				Path:     filepath.ToSlash(r),
				Mode:     fmt.Sprintf("%04o", st.Mode().Perm()),
				Contents: base64.StdEncoding.EncodeToString(b),
			})
		}
		return nil
	}
	if err := walk(target, ""); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	if out == nil {
		out = []file{}
	}
	return out, nil
}

func versionCmd(args []string) error {
	fl := flag.NewFlagSet("version", flag.ExitOnError)
	socketDir := fl.String("socket-dir", "", "directory of provider sockets")
	provider := fl.String("provider", "", "provider name")
	_ = fl.Parse(args)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	builder := secretsstore.NewPluginClientBuilder([]string{*socketDir})
	defer builder.Cleanup()
	client, err := builder.Get(ctx, *provider)
	if err != nil {
		return err
	}
	v, err := secretsstore.Version(ctx, client)
	if err != nil {
		return err
	}
	return printJSON(map[string]string{"driver": moduleVersion(driverModule), "provider": *provider, "runtimeVersion": v})
}

// benchCmd: N warm mounts from C concurrent callers over one client (the
// driver keeps one connection per provider), each into its own target
// directory with the driver's writer. Prints latency percentiles,
// throughput, the client's CPU time, and how many mounts failed.
func benchCmd(args []string) error {
	fl := flag.NewFlagSet("bench", flag.ExitOnError)
	socketDir := fl.String("socket-dir", "", "directory of provider sockets")
	reqPath := fl.String("request", "", "request JSON file")
	target := fl.String("target", "", "scratch directory for the targets")
	n := fl.Int("n", 1000, "mounts")
	c := fl.Int("c", 1, "concurrent callers")
	warm := fl.Int("warm", 20, "untimed mounts first")
	duration := fl.Duration("duration", 0, "stop starting mounts after this long (0: run all -n)")
	_ = fl.Parse(args)
	if *n < 1 || *c < 1 || *n > 1_000_000 || *c > 1024 {
		return errors.New("bench: -n in 1..1000000, -c in 1..1024")
	}
	req, err := readRequest(*reqPath)
	if err != nil {
		return err
	}
	attributes, secrets, permission, err := req.encode()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	builder := secretsstore.NewPluginClientBuilder([]string{*socketDir})
	defer builder.Cleanup()
	client, err := builder.Get(ctx, req.Provider)
	if err != nil {
		return err
	}
	dirs := make([]string, *c)
	for i := range dirs {
		dirs[i] = filepath.Join(*target, fmt.Sprintf("w%d", i))
		if err := os.MkdirAll(dirs[i], 0o750); err != nil {
			return err
		}
	}
	for i := 0; i < *warm; i++ {
		if _, _, err := secretsstore.MountContent(ctx, client, attributes, secrets, dirs[0], permission, nil); err != nil {
			return fmt.Errorf("warm-up mount: %w", err)
		}
	}
	lat := make([]time.Duration, *n)
	var next, failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	var deadline time.Time
	if *duration > 0 {
		deadline = start.Add(*duration)
	}
	for w := 0; w < *c; w++ {
		wg.Add(1)
		go func(dir string) {
			defer wg.Done()
			for {
				if !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				i := next.Add(1) - 1
				if i >= int64(*n) {
					return
				}
				t := time.Now()
				_, _, err := secretsstore.MountContent(ctx, client, attributes, secrets, dir, permission, nil)
				lat[i] = time.Since(t)
				if err != nil {
					failed.Add(1)
					errOnce.Do(func() { firstErr = err })
				}
			}
		}(dirs[w])
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := cpuTime() - cpu0
	done := int(min(next.Load(), int64(*n)))
	if done < 1 {
		return errors.New("bench: no mount finished")
	}
	lat = lat[:done]
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		i := int(p * float64(len(lat)-1))
		return float64(lat[i].Microseconds()) / 1000
	}
	out := map[string]any{
		"driver":            moduleVersion(driverModule),
		"mounts":            done,
		"callers":           *c,
		"failed":            failed.Load(),
		"p50_ms":            pct(0.50),
		"p99_ms":            pct(0.99),
		"mounts_per_s":      float64(done) / wall.Seconds(),
		"client_cpu_ms":     float64(cpu.Microseconds()) / 1000,
		"wall_ms":           float64(wall.Microseconds()) / 1000,
		"files_fingerprint": fingerprint(dirs[0]),
	}
	if firstErr != nil {
		out["first_error"] = firstErr.Error()
	}
	return printJSON(out)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fingerprint: a digest of the files a pod sees in dir, so a bench run can
// show that every provider wrote the same volume.
func fingerprint(dir string) string {
	files, err := readVolume(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%s\x00%s\x00", f.Path, f.Mode, f.Contents)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
