// Command client is the benchmark's load generator, written the way a Go
// runtime proxy would pull: generated grpc-go client, default options.
//
//	client -mode pull  -addr A -name N[,N2,...] [-n 100] [-rate 5000000]
//	client -mode unary -addr A -name N [-c 64] [-duration 3s]
//	client -mode compile -addr A -name N [-n 100]
//
// It prints one JSON object on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "benchpeer/pb"
)

var (
	mode     = flag.String("mode", "pull", "pull, unary or compile")
	addr     = flag.String("addr", "127.0.0.1:5679", "server host:port")
	name     = flag.String("name", "bench", "plugin name; for pulls, names separated by commas are pulled round robin")
	version  = flag.String("version", "1.0.0", "plugin version")
	runtime  = flag.String("runtime", "1.0.0", "runtime version")
	build    = flag.String("build", "go1.19.8", "runtime build version")
	pulls    = flag.Int("n", 1, "concurrent pulls (or compiles), each on its own connection")
	rate     = flag.Float64("rate", 0, "bytes per second each pull reads at (0: as fast as it can)")
	callers  = flag.Int("c", 1, "concurrent unary callers on one connection")
	duration = flag.Duration("duration", 3*time.Second, "how long unary callers call")
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func dial() *grpc.ClientConn {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, *addr, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail(err)
	}
	return conn
}

func request() (*pb.RuntimeInfo, *pb.PluginInfo) {
	return requestFor(*name)
}

func requestFor(plugin string) (*pb.RuntimeInfo, *pb.PluginInfo) {
	return &pb.RuntimeInfo{Version: *runtime, BuildVersion: *build}, &pb.PluginInfo{Name: plugin, Version: *version}
}

// pull streams one artifact to nowhere, checking its length against the
// x-plugin-size header, reading no faster than rate.
func pull(conn *grpc.ClientConn, plugin string) (int64, error) {
	rt, pl := requestFor(plugin)
	stream, err := pb.NewPluginRegistryClient(conn).PullPlugin(context.Background(), &pb.PullPluginRequest{Runtime: rt, Plugin: pl})
	if err != nil {
		return 0, err
	}
	header, err := stream.Header()
	if err != nil {
		return 0, err
	}
	sizes := header.Get("x-plugin-size")
	start := time.Now()
	var received int64
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return received, err
		}
		received += int64(len(msg.GetData()))
		if *rate > 0 {
			due := time.Duration(float64(received) / *rate * float64(time.Second))
			if wait := due - time.Since(start); wait > 0 {
				time.Sleep(wait)
			}
		}
	}
	if len(sizes) == 1 {
		if want, _ := strconv.ParseInt(sizes[0], 10, 64); want != received {
			return received, fmt.Errorf("received %d bytes, x-plugin-size says %d", received, want)
		}
	}
	return received, nil
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

// onConnections dials n connections, then runs call once on each, all at
// once, and returns the wall time (the clock starts once every connection is
// up) and each call's duration in ms, sorted. The first error ends the run.
func onConnections(n int, call func(i int, conn *grpc.ClientConn) error) (time.Duration, []float64) {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		conns[i] = dial()
	}
	durations := make([]float64, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr error
	start := time.Now()
	for i, conn := range conns {
		wg.Add(1)
		go func(i int, conn *grpc.ClientConn) {
			defer wg.Done()
			began := time.Now()
			err := call(i, conn)
			durations[i] = float64(time.Since(began).Microseconds()) / 1000
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}(i, conn)
	}
	wg.Wait()
	wall := time.Since(start)
	for _, conn := range conns {
		conn.Close()
	}
	if firstErr != nil {
		fail(firstErr)
	}
	sort.Float64s(durations)
	return wall, durations
}

func runPulls() map[string]any {
	var total int64
	var mu sync.Mutex
	names := strings.Split(*name, ",")
	wall, durations := onConnections(*pulls, func(i int, conn *grpc.ClientConn) error {
		n, err := pull(conn, names[i%len(names)])
		mu.Lock()
		total += n
		mu.Unlock()
		return err
	})
	return map[string]any{
		"wallMs": float64(wall.Microseconds()) / 1000,
		"bytes":  total,
		"p50Ms":  percentile(durations, 0.5),
		"p99Ms":  percentile(durations, 0.99),
	}
}

func runUnary() map[string]any {
	conn := dial()
	defer conn.Close()
	client := pb.NewPluginCompilerClient(conn)
	rt, pl := request()
	req := &pb.CompilePluginRequest{Runtime: rt, Plugin: pl}
	if _, err := client.CompilePlugin(context.Background(), req); err != nil {
		fail(err) // warm-up, and a check that the key is a hit
	}
	latencies := make([][]float64, *callers)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	stop := time.Now().Add(*duration)
	start := time.Now()
	for c := 0; c < *callers; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for time.Now().Before(stop) {
				began := time.Now()
				_, err := client.CompilePlugin(context.Background(), req, grpc.Header(&metadata.MD{}))
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				latencies[c] = append(latencies[c], float64(time.Since(began).Nanoseconds())/1e6)
			}
		}(c)
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		fail(firstErr)
	}
	var all []float64
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Float64s(all)
	return map[string]any{
		"calls":       len(all),
		"callsPerSec": float64(len(all)) / wall.Seconds(),
		"p50Ms":       percentile(all, 0.5),
		"p99Ms":       percentile(all, 0.99),
	}
}

// runCompiles makes one CompilePlugin call from each of n connections, all
// at once, as a fleet of runtimes does when a new key is rolled out; the
// clock starts once every connection is up.
func runCompiles() map[string]any {
	rt, pl := request()
	req := &pb.CompilePluginRequest{Runtime: rt, Plugin: pl}
	references := make([]string, *pulls)
	wall, durations := onConnections(*pulls, func(i int, conn *grpc.ClientConn) error {
		res, err := pb.NewPluginCompilerClient(conn).CompilePlugin(context.Background(), req)
		references[i] = res.GetPlugin()
		return err
	})
	distinct := map[string]bool{}
	for _, r := range references {
		distinct[r] = true
	}
	return map[string]any{
		"wallMs":     float64(wall.Microseconds()) / 1000,
		"p50Ms":      percentile(durations, 0.5),
		"references": len(distinct),
	}
}

func main() {
	flag.Parse()
	var result map[string]any
	switch *mode {
	case "pull":
		result = runPulls()
	case "unary":
		result = runUnary()
	case "compile":
		result = runCompiles()
	default:
		fail(fmt.Errorf("unknown -mode %q", *mode))
	}
	if err := json.NewEncoder(os.Stdout).Encode(result); err != nil {
		fail(err)
	}
}
