import { type Context, defineDriver, type Operation } from "@atomix/runtime-sdk";
import { Counts } from "./counts.js";

const counts = new Counts();

export const driver = defineDriver({
  name: "counter",
  apiVersion: 2,
  async handle(operation: Operation, context: Context): Promise<string> {
    const count = counts.increment(operation.key);
    context.log(`${operation.kind} ${operation.key}`);
    return `${operation.key}=${count} on runtime ${context.runtimeVersion}`;
  },
});
