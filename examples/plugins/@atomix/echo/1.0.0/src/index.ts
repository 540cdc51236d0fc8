import { SDK_VERSION } from "@atomix/runtime-sdk";

/**
 * Written to the part both SDK releases share: an async handle() that reads
 * only the key, and apiVersion 2 (runtime 1 ignores it).
 */
export const driver = {
  name: "echo",
  apiVersion: 2 as const,
  async handle(request: { readonly key: string }): Promise<string> {
    return `echo ${request.key} (sdk ${SDK_VERSION})`;
  },
};
