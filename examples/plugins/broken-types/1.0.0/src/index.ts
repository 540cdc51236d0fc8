import type { Driver } from "@atomix/runtime-sdk";

export const driver: Driver = {
  name: "broken-types",
  handle(request) {
    return request.key.length;
  },
};
