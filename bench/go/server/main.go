// Command server is the grpc-go peer of the benchmark: the same
// atomix.runtime.v1 API served the way a Go service would, with the code
// protoc-gen-go and protoc-gen-go-grpc generate from proto/. PullPlugin
// streams a file named on the command line in fixed-size chunks read into
// one reused buffer (grpc-go copies each message while encoding it);
// CompilePlugin answers every key with a reference to that file.
//
// By default it announces what an atomix-plugins server does (x-plugin-digest
// and x-plugin-size, resume from x-plugin-offset). The API promises none of
// that, so the tests also run it as other conforming servers are:
// -metadata none, size (x-plugin-size alone), trailer (the size, and the
// digest as a trailer); -compile-answer opaque answers a name of its own
// instead of a reference; -cut-after and -corrupt break pulls on purpose.
// It also serves the admin calls the client library makes, in memory
// (admin.go), for the client's parity suite.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	adminpb "benchpeer/adminpb"
	pb "benchpeer/pb"
)

type artifact struct {
	path   string
	size   int64
	digest string
}

type files map[string]artifact

func (f files) String() string { return fmt.Sprint(map[string]artifact(f)) }

// Set takes name=path and hashes the file once, as a store would have.
func (f files) Set(value string) error {
	name, path, ok := strings.Cut(value, "=")
	if !ok {
		return fmt.Errorf("expected name=path, got %q", value)
	}
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	hash := sha256.New()
	size, err := io.Copy(hash, file)
	if err != nil {
		return err
	}
	f[name] = artifact{path: path, size: size, digest: "sha256:" + hex.EncodeToString(hash.Sum(nil))}
	return nil
}

type registry struct {
	pb.UnimplementedPluginRegistryServer
	files    files
	chunk    int
	metadata string
	// The first `cuts` pulls end with UNAVAILABLE once `cutAfter` bytes were sent.
	cutAfter int64
	cuts     atomic.Int64
	// Flips the first byte sent: the bytes no longer match the digest.
	corrupt bool
}

// offset is where an atomix-plugins client asks to resume; only -metadata full honours it.
func (r *registry) offset(stream pb.PluginRegistry_PullPluginServer, a artifact) (int64, error) {
	md, _ := metadata.FromIncomingContext(stream.Context())
	values := md.Get("x-plugin-offset")
	if r.metadata != "full" || len(values) == 0 {
		return 0, nil
	}
	offset, err := strconv.ParseInt(values[0], 10, 64)
	if err != nil || offset < 0 {
		return 0, status.Errorf(codes.InvalidArgument, "x-plugin-offset %q is not a byte count", values[0])
	}
	if offset > a.size {
		return 0, status.Errorf(codes.OutOfRange, "x-plugin-offset %d is past the end (%d bytes)", offset, a.size)
	}
	return offset, nil
}

func (r *registry) PullPlugin(req *pb.PullPluginRequest, stream pb.PluginRegistry_PullPluginServer) error {
	a, ok := r.files[req.GetPlugin().GetName()]
	if !ok {
		return status.Errorf(codes.NotFound, "no artifact for %q", req.GetPlugin().GetName())
	}
	file, err := os.Open(a.path)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer file.Close()
	offset, err := r.offset(stream, a)
	if err != nil {
		return err
	}
	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	size := strconv.FormatInt(a.size, 10)
	var header metadata.MD
	switch r.metadata {
	case "full":
		header = metadata.Pairs("x-plugin-digest", a.digest, "x-plugin-size", size)
	case "size", "trailer":
		header = metadata.Pairs("x-plugin-size", size)
	}
	if header != nil {
		if err := stream.SendHeader(header); err != nil {
			return err
		}
	}
	if r.metadata == "trailer" {
		stream.SetTrailer(metadata.Pairs("x-plugin-digest", a.digest))
	}
	cut := r.cutAfter > 0 && r.cuts.Add(-1) >= 0
	sent := offset
	buf := make([]byte, r.chunk)
	for {
		n, err := io.ReadFull(file, buf)
		if cut && sent+int64(n) > r.cutAfter {
			n = int(r.cutAfter - sent)
			err = errCut
		}
		if n > 0 {
			if r.corrupt && sent == 0 {
				buf[0] ^= 0xff
			}
			if err := stream.Send(&pb.PullPluginResponse{Data: buf[:n]}); err != nil {
				return err
			}
			sent += int64(n)
		}
		if err == errCut {
			return status.Errorf(codes.Unavailable, "cut after %d bytes", sent)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return status.Error(codes.DataLoss, err.Error())
		}
	}
}

var errCut = errors.New("cut")

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	chunk := flag.Int("chunk", 1<<20, "bytes per PullPluginResponse")
	served := files{}
	flag.Var(served, "file", "name=path of an artifact to serve (repeatable)")
	mode := flag.String("metadata", "full", "what PullPlugin announces: full, none, size, trailer")
	answer := flag.String("compile-answer", "reference", "what CompilePlugin answers: reference or opaque")
	cutAfter := flag.Int64("cut-after", 0, "end pulls with UNAVAILABLE after this many bytes (see -cuts)")
	cuts := flag.Int64("cuts", 1, "how many pulls -cut-after cuts")
	corrupt := flag.Bool("corrupt", false, "flip the first byte of every pull")
	flag.Parse()
	if *mode != "full" && *mode != "none" && *mode != "size" && *mode != "trailer" {
		fmt.Fprintf(os.Stderr, "-metadata %q: expected full, none, size or trailer\n", *mode)
		os.Exit(2)
	}
	if *answer != "reference" && *answer != "opaque" {
		fmt.Fprintf(os.Stderr, "-compile-answer %q: expected reference or opaque\n", *answer)
		os.Exit(2)
	}
	reg := &registry{files: served, chunk: *chunk, metadata: *mode, cutAfter: *cutAfter, corrupt: *corrupt}
	reg.cuts.Store(*cuts)

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	pb.RegisterPluginRegistryServer(server, reg)
	pb.RegisterPluginCompilerServer(server, &unary{files: served, opaque: *answer == "opaque"})
	adminpb.RegisterPluginAdminServer(server, newAdmin())
	fmt.Printf("{\"msg\":\"serving\",\"address\":%q}\n", listener.Addr().String())
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
