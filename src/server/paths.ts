import { fileURLToPath } from "node:url";

/** The package root: proto/ and examples/ are found from here at run time. */
export const PACKAGE_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const PROTO_DIR = fileURLToPath(new URL("../../../proto/", import.meta.url));
