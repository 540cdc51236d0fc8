module github.com/atomix/atomix-plugins/clients/go

go 1.19

require (
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)

require (
	github.com/golang/protobuf v1.5.2 // indirect
	golang.org/x/net v0.7.0 // indirect
	golang.org/x/sys v0.5.0 // indirect
	golang.org/x/text v0.7.0 // indirect
	google.golang.org/genproto v0.0.0-20200526211855-cb27e3aa2013 // indirect
)

// Offline builds: the gRPC and protobuf modules come from Debian's packages
// (golang-google-grpc-dev, golang-google-protobuf-dev,
// golang-github-golang-protobuf-1-5-dev and what they depend on).
replace (
	github.com/golang/protobuf => /usr/share/gocode/src/github.com/golang/protobuf
	github.com/google/go-cmp => /usr/share/gocode/src/github.com/google/go-cmp
	golang.org/x/net => /usr/share/gocode/src/golang.org/x/net
	golang.org/x/sys => /usr/share/gocode/src/golang.org/x/sys
	golang.org/x/text => /usr/share/gocode/src/golang.org/x/text
	google.golang.org/genproto => /usr/share/gocode/src/google.golang.org/genproto
	google.golang.org/grpc => /usr/share/gocode/src/google.golang.org/grpc
	google.golang.org/protobuf => /usr/share/gocode/src/google.golang.org/protobuf
)

// Modules that only appear in the requirement graph of the Debian modules
// above (which predate graph pruning), none of whose packages are built:
// empty stand-ins, so that the graph resolves without a network. A copy of
// examples/go-runtime/graph-stubs: a registered runtime release carries only
// replacement folders inside its go.mod's folder, so neither can use the
// other's.
replace (
	cloud.google.com/go/compute/metadata => ./graph-stubs/cloud.google.com/go/compute/metadata
	github.com/cncf/udpa/go => ./graph-stubs/github.com/cncf/udpa/go
	github.com/envoyproxy/go-control-plane => ./graph-stubs/github.com/envoyproxy/go-control-plane
	github.com/golang/glog => ./graph-stubs/github.com/golang/glog
	github.com/google/uuid => ./graph-stubs/github.com/google/uuid
	golang.org/x/lint => ./graph-stubs/golang.org/x/lint
	golang.org/x/mod => ./graph-stubs/golang.org/x/mod
	golang.org/x/oauth2 => ./graph-stubs/golang.org/x/oauth2
	golang.org/x/term => ./graph-stubs/golang.org/x/term
	golang.org/x/tools => ./graph-stubs/golang.org/x/tools
	google.golang.org/appengine => ./graph-stubs/google.golang.org/appengine
	honnef.co/go/tools => ./graph-stubs/honnef.co/go/tools
)
