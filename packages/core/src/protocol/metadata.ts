/** Metadata keys of PullPlugin beyond the seed's wire contract; server and client share them. */
export const PULL_METADATA = {
  /** Response header: `sha256:<64 hex>` of the whole artifact. */
  digest: "x-plugin-digest",
  /** Response header: the whole artifact's size in bytes. */
  size: "x-plugin-size",
  /** Request: start streaming at this byte (resume). Past the end: OUT_OF_RANGE. */
  offset: "x-plugin-offset",
  /** Request: a digest the client holds; equal → no chunks are sent. */
  ifNoneMatch: "x-plugin-if-none-match",
  /** Response trailer: "true" when no chunks were sent because of ifNoneMatch. */
  notModified: "x-plugin-not-modified",
} as const;

/**
 * Sent by the catalog's HTTP port to a client that spoke HTTP/2 (gRPC) to
 * it: the server's gRPC address, so that the client can say where to go.
 */
export const GRPC_ADDRESS_HEADER = "x-atomix-plugins-grpc";
