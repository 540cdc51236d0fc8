/**
 * The yardstick for the cache-hit CompilePlugin: grpc-js answering the same
 * unary method with a constant, through the same generated codec, and
 * nothing else. Whatever our server spends beyond this is our own code.
 */
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from "@grpc/grpc-js";
import {
  type CompilePluginRequest,
  type CompilePluginResponse,
  PluginCompilerDefinition,
} from "atomix-plugins-core/gen/atomix/runtime/v1/plugin";
import { grpcService } from "../src/server/grpc-service.js";

const reference = `atomix-plugin://1.0.0/go1.19.8/bench@1.0.0@sha256:${"0".repeat(64)}`;
const server = new Server();
server.addService(grpcService(PluginCompilerDefinition), {
  compilePlugin(
    _call: ServerUnaryCall<CompilePluginRequest, CompilePluginResponse>,
    callback: sendUnaryData<CompilePluginResponse>,
  ) {
    callback(null, { plugin: reference });
  },
});
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  console.log(JSON.stringify({ msg: "serving", address: `127.0.0.1:${port}` }));
});
process.once("SIGTERM", () => server.forceShutdown());
