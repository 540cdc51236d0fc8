import { fileURLToPath } from "node:url";

export const PROTO_DIR = fileURLToPath(new URL("../../../proto/", import.meta.url));
