package main

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "benchpeer/pb"
)

// unary answers CompilePlugin from memory, as a cache hit would.
type unary struct {
	pb.UnimplementedPluginCompilerServer
	files  files
	opaque bool
}

func (u *unary) CompilePlugin(_ context.Context, req *pb.CompilePluginRequest) (*pb.CompilePluginResponse, error) {
	a, ok := u.files[req.GetPlugin().GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no artifact for %q", req.GetPlugin().GetName())
	}
	r, p := req.GetRuntime(), req.GetPlugin()
	if u.opaque {
		// A conforming answer that is not an atomix-plugins reference.
		return &pb.CompilePluginResponse{Plugin: p.GetName() + "-" + p.GetVersion() + ".bin"}, nil
	}
	return &pb.CompilePluginResponse{Plugin: "atomix-plugin://" + r.GetVersion() + "/" + r.GetBuildVersion() + "/" + p.GetName() + "@" + p.GetVersion() + "@" + a.digest}, nil
}
