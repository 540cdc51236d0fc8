// Command server is the grpc-go peer of the benchmark: the same
// atomix.runtime.v1 API served the way a Go service would, with the code
// protoc-gen-go and protoc-gen-go-grpc generate from proto/. PullPlugin
// streams a file named on the command line in fixed-size chunks read into
// one reused buffer (grpc-go copies each message while encoding it);
// CompilePlugin answers every key with a reference to that file.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

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
	files files
	chunk int
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
	if err := stream.SendHeader(metadata.Pairs("x-plugin-digest", a.digest, "x-plugin-size", strconv.FormatInt(a.size, 10))); err != nil {
		return err
	}
	buf := make([]byte, r.chunk)
	for {
		n, err := io.ReadFull(file, buf)
		if n > 0 {
			if err := stream.Send(&pb.PullPluginResponse{Data: buf[:n]}); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return status.Error(codes.DataLoss, err.Error())
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	chunk := flag.Int("chunk", 1<<20, "bytes per PullPluginResponse")
	served := files{}
	flag.Var(served, "file", "name=path of an artifact to serve (repeatable)")
	flag.Parse()

	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer()
	pb.RegisterPluginRegistryServer(server, &registry{files: served, chunk: *chunk})
	pb.RegisterPluginCompilerServer(server, &unary{files: served})
	fmt.Printf("{\"msg\":\"serving\",\"address\":%q}\n", listener.Addr().String())
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
