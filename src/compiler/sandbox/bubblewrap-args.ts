import { lstatSync, readlinkSync, realpathSync } from "node:fs";
import type { SandboxStep, StepLimits } from "./sandbox-step.js";

/** The unprivileged user a step runs as: it owns the writable paths inside, nothing else. */
const SANDBOX_UID = "65534";

/**
 * Top-level folders that on merged-/usr systems are links into /usr (Debian
 * 12): recreated as the same links, else bound read-only as they are.
 */
const SYSTEM_DIRS = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];

/**
 * Files of /etc the toolchains need: the dynamic linker's cache and Debian's
 * alternatives (`cc` is a link through /etc/alternatives). Nothing else of
 * /etc: no passwd, no host names, no operator configuration.
 */
const ETC_FILES = ["/etc/ld.so.cache", "/etc/alternatives"];

/** The host name every step sees (its own UTS namespace): never the host's. */
export const SANDBOX_HOSTNAME = "atomix-build";

/**
 * Files of /proc that describe the host rather than the step: the kernel's
 * release and build (also in `uname -r`'s files), its command line, and the
 * host's memory. Read as empty inside: a compiler that reads a file into an
 * artifact (gcc's `#include`, `.incbin`) or a step's output cannot carry
 * them out. No toolchain reads them: Node.js (libuv) falls back to
 * sysinfo(2) for the memory size, Go and gcc never look. The uname(2) and
 * sysinfo(2) system calls still answer a program that asks (only the
 * verification load runs plugin code): hiding those needs a seccomp filter.
 */
const HOST_PROC_FILES = [
  "/proc/version",
  "/proc/cmdline",
  "/proc/meminfo",
  "/proc/sys/kernel/osrelease",
  "/proc/sys/kernel/version",
];

/** What a downloading step needs to reach a proxy: name resolution and CA roots. */
const NETWORK_ETC_FILES = [
  "/etc/resolv.conf",
  "/etc/hosts",
  "/etc/nsswitch.conf",
  "/etc/ssl",
  "/etc/ca-certificates",
  "/etc/pki",
];

/**
 * bubblewrap's arguments for one step: every namespace unshared (no network
 * unless the step downloads, its own PID namespace, IPC and UTS, a user
 * namespace mapping an unprivileged uid), no capabilities, no new user
 * namespaces inside, killed with its parent, a new session (no terminal to
 * inject into), a host name of its own, an empty environment but the
 * step's, and a filesystem made only of /usr, the dynamic linker's cache, a
 * fresh /proc (without the host's files above) and /dev, a /tmp tmpfs of
 * the step's size, and the paths the step names.
 */
export function bubblewrapArgs(step: SandboxStep, limits: StepLimits): string[] {
  const args = [
    "--unshare-all",
    "--unshare-user",
    "--uid",
    SANDBOX_UID,
    "--gid",
    SANDBOX_UID,
    "--disable-userns",
    "--hostname",
    SANDBOX_HOSTNAME,
    "--die-with-parent",
    "--new-session",
    "--clearenv",
  ];
  for (const [name, value] of Object.entries(step.env ?? {})) args.push("--setenv", name, value);
  if (step.network) args.push("--share-net");
  args.push("--ro-bind", "/usr", "/usr");
  for (const dir of SYSTEM_DIRS) {
    const link = linkTarget(dir);
    if (link !== undefined) args.push("--symlink", link, dir);
    else args.push("--ro-bind-try", dir, dir);
  }
  for (const file of [...ETC_FILES, ...(step.network ? NETWORK_ETC_FILES : [])]) {
    args.push("--ro-bind-try", file, file);
  }
  args.push("--proc", "/proc", "--dev", "/dev", "--size", String(limits.tmpBytes), "--tmpfs", "/tmp");
  // /dev/null, whose reads are empty: --dev-bind, because a plain bind refuses reads of a device.
  for (const file of HOST_PROC_FILES) args.push("--dev-bind-try", "/dev/null", file);
  // A readable path that is a link on the host (a node_modules folder linked
  // in from elsewhere) is the same link inside, to its target bound as well:
  // Node.js resolves imports through the link's path, then its target's.
  const links: [target: string, path: string][] = [];
  const readable = (step.readable ?? []).flatMap((path) => {
    const link = linkTarget(path);
    if (link === undefined) return [path];
    links.push([link, path]);
    return [realpathSync(path)];
  });
  // Parents before children, so that a writable folder inside a readable one stays writable.
  const binds = [
    ...(process.execPath.startsWith("/usr/") ? [] : [{ path: process.execPath, writable: false }]),
    ...readable.map((path) => ({ path, writable: false })),
    ...(step.writable ?? []).map((path) => ({ path, writable: true })),
  ].sort((a, b) => depth(a.path) - depth(b.path));
  for (const { path, writable } of binds) args.push(writable ? "--bind" : "--ro-bind", path, path);
  for (const [target, path] of links) args.push("--symlink", target, path);
  args.push("--chdir", step.cwd);
  return args;
}

function linkTarget(path: string): string | undefined {
  try {
    return lstatSync(path).isSymbolicLink() ? readlinkSync(path) : undefined;
  } catch {
    return undefined;
  }
}

function depth(path: string): number {
  return path.split("/").length;
}
