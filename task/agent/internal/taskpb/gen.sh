#!/bin/sh
# Regenerates the Go code of this package (go generate ./task/agent/internal/taskpb).
# Needs protoc, and protoc-gen-go and protoc-gen-go-ttrpc in PATH:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc
# containerd's types/*.proto come from the containerd/api module in the Go
# module cache, at the paths containerd registers them under.
set -eu
api=$(go list -m -f '{{.Dir}}' github.com/containerd/containerd/api)
inc=$(mktemp -d)
trap 'rm -rf "$inc"' EXIT
mkdir -p "$inc/types/task"
cp "$api/types/mount.proto" "$inc/types/"
cp "$api/types/task/task.proto" "$inc/types/task/"
opts="Mtypes/mount.proto=github.com/containerd/containerd/api/types,Mtypes/task/task.proto=github.com/containerd/containerd/api/types/task"
protoc -I . -I "$inc" --go_out=. --go_opt=paths=source_relative,"$opts" kuasar_agent_task.proto
protoc -I . -I "$inc" --go-ttrpc_out=. --go-ttrpc_opt=paths=source_relative,prefix=TTRPC,"$opts",Mkuasar_agent_task.proto=github.com/kuasar-go/kuasar/task/agent/internal/taskpb \
	kuasar_agent_task_service.proto
# containerd's Go names spell ID and ExecID (its generator fixes acronyms);
# the agent's code is written against them.
sed -i -E 's/\bExecId\b/ExecID/g; s/\bGetExecId\b/GetExecID/g; s/\bId\b/ID/g; s/\bGetId\b/GetID/g' kuasar_agent_task.pb.go
gofmt -w kuasar_agent_task.pb.go kuasar_agent_task_service_ttrpc.pb.go
