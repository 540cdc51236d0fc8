import { credentials, Metadata } from "@grpc/grpc-js";
import type { PluginError } from "atomix-plugins-core/errors/plugin-error";
import type { PushHeader } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { fromServiceError, PluginAdminClient } from "./grpc-js-clients.js";

/**
 * A PushPlugin as any gRPC client may send it: the header exactly as given
 * (no digest or size filled in), then `chunks`, then half-close. Resolves to
 * the error the server answered, or undefined when it stored the artifact.
 */
export async function rawPush(
  address: string,
  header: Partial<PushHeader> & Pick<PushHeader, "runtime" | "plugin">,
  chunks: Buffer[] = [],
): Promise<PluginError | undefined> {
  const client = new PluginAdminClient(address, credentials.createInsecure());
  try {
    return await new Promise<PluginError | undefined>((resolve) => {
      const call = client.pushPlugin(new Metadata(), (error) => {
        resolve(error ? fromServiceError(error) : undefined);
      });
      call.write({
        part: {
          $case: "header",
          value: { digest: "", size: 0, mediaType: "", annotations: {}, ...header },
        },
      });
      for (const chunk of chunks) call.write({ part: { $case: "data", value: chunk } });
      call.end();
    });
  } finally {
    client.close();
  }
}
