package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminpb "benchpeer/adminpb"
	pb "benchpeer/pb"
)

// admin is an in-memory atomix.plugins.admin.v1 PluginAdmin with the
// calls the client library makes (push, list, inspect, remove, gc), written
// from the proto alone, so that the client's parity suite
// (test/client-parity.test.ts) holds the client to a second server of the
// admin API as well as ours. It signs nothing: GetProvenance stays
// unimplemented.
type admin struct {
	adminpb.UnimplementedPluginAdminServer
	mu        sync.Mutex
	manifests map[string]*adminpb.Manifest
	blobs     map[string][]byte
}

func newAdmin() *admin {
	return &admin{manifests: map[string]*adminpb.Manifest{}, blobs: map[string][]byte{}}
}

func keyOf(r *pb.RuntimeInfo, p *pb.PluginInfo) string {
	return r.GetVersion() + "/" + r.GetBuildVersion() + "/" + p.GetName() + "@" + p.GetVersion()
}

func (a *admin) PushPlugin(stream adminpb.PluginAdmin_PushPluginServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	header := first.GetHeader()
	if header == nil {
		return status.Error(codes.InvalidArgument, "the first message must be the header")
	}
	if header.GetPlugin().GetName() == "" || header.GetRuntime().GetVersion() == "" {
		return status.Error(codes.InvalidArgument, "the header names no plugin or runtime")
	}
	var data []byte
	for {
		part, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if part.GetHeader() != nil {
			return status.Error(codes.InvalidArgument, "a second header")
		}
		data = append(data, part.GetData()...)
	}
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if header.GetDigest() != "" && header.GetDigest() != digest {
		return status.Errorf(codes.InvalidArgument, "the bytes are %s, not the announced %s", digest, header.GetDigest())
	}
	if header.GetSize() != 0 && header.GetSize() != uint64(len(data)) {
		return status.Errorf(codes.InvalidArgument, "%d bytes, not the announced %d", len(data), header.GetSize())
	}
	media := header.GetMediaType()
	if media == "" {
		media = "application/octet-stream"
	}
	manifest := &adminpb.Manifest{
		Runtime:     header.GetRuntime(),
		Plugin:      header.GetPlugin(),
		Digest:      digest,
		Size:        uint64(len(data)),
		MediaType:   media,
		CreatedAt:   time.Now().UTC().Format(time.RFC3339Nano),
		Annotations: header.GetAnnotations(),
		HeldHere:    true,
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.blobs[digest] = data
	a.manifests[keyOf(header.GetRuntime(), header.GetPlugin())] = manifest
	return stream.SendAndClose(&adminpb.PushPluginResponse{Manifest: manifest})
}

func (a *admin) ListPlugins(_ context.Context, req *adminpb.ListPluginsRequest) (*adminpb.ListPluginsResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	keys := make([]string, 0, len(a.manifests))
	for key, m := range a.manifests {
		if req.GetPluginName() != "" && m.GetPlugin().GetName() != req.GetPluginName() {
			continue
		}
		if req.GetRuntimeVersion() != "" && m.GetRuntime().GetVersion() != req.GetRuntimeVersion() {
			continue
		}
		keys = append(keys, key)
	}
	sort.Strings(keys)
	response := &adminpb.ListPluginsResponse{}
	for _, key := range keys {
		response.Manifests = append(response.Manifests, a.manifests[key])
	}
	return response, nil
}

func (a *admin) InspectPlugin(_ context.Context, req *adminpb.InspectPluginRequest) (*adminpb.Manifest, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m, ok := a.manifests[keyOf(req.GetRuntime(), req.GetPlugin())]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no plugin %s", keyOf(req.GetRuntime(), req.GetPlugin()))
	}
	return m, nil
}

func (a *admin) RemovePlugin(_ context.Context, req *adminpb.RemovePluginRequest) (*adminpb.RemovePluginResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	key := keyOf(req.GetRuntime(), req.GetPlugin())
	_, ok := a.manifests[key]
	delete(a.manifests, key)
	return &adminpb.RemovePluginResponse{Removed: ok}, nil
}

func (a *admin) CollectGarbage(context.Context, *adminpb.CollectGarbageRequest) (*adminpb.CollectGarbageResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	used := map[string]bool{}
	for _, m := range a.manifests {
		used[m.GetDigest()] = true
	}
	response := &adminpb.CollectGarbageResponse{}
	for digest, data := range a.blobs {
		if !used[digest] {
			delete(a.blobs, digest)
			response.RemovedBlobs++
			response.FreedBytes += uint64(len(data))
		}
	}
	return response, nil
}
