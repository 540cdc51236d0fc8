import { defineDriver, formatKey, type Request } from "@atomix/runtime-sdk";
import { Counts } from "./counts.js";

const counts = new Counts();

export const driver = defineDriver({
  name: "counter",
  handle(request: Request): string {
    return `${formatKey(request.key)}=${counts.increment(request.key)}`;
  },
});
