import { mkdir, readdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** The cgroup of one running step. */
export interface StepCgroup {
  /** The `cgroup.procs` files the step's first process writes its pid into. */
  readonly procsFiles: readonly string[];
  /** Kills every process in the cgroup, whatever it is blocked on. */
  kill(): Promise<void>;
  /** True when the kernel killed a process of the step for its memory limit. */
  outOfMemory(): Promise<boolean>;
  /** Kills what is left and removes the cgroup. */
  remove(): Promise<void>;
}

export interface CgroupLimiter {
  readonly description: string;
  create(limits: { memoryBytes: number; processes: number }): Promise<StepCgroup>;
}

let nextStep = 0;

/**
 * Per-step cgroups under the server's own, so that a step's memory (heap,
 * buffers, page cache of its tmpfs, every child) and its number of processes
 * are bounded by the kernel, and a timeout can kill all of it at once. Works
 * with cgroup v2 (a delegated subtree, as systemd's `Delegate=yes` gives) and
 * with v1's memory and pids hierarchies. Undefined when neither is writable:
 * the caller reports that the limits are not enforced.
 */
export async function createCgroupLimiter(): Promise<CgroupLimiter | undefined> {
  const own = await readOwnCgroups();
  const mounts = await readCgroupMounts();
  return (await unifiedLimiter(own, mounts)) ?? (await legacyLimiter(own, mounts));
}

interface CgroupMount {
  readonly path: string;
  readonly version: 1 | 2;
  readonly controllers: readonly string[];
}

async function readOwnCgroups(): Promise<Map<string, string>> {
  // "4:memory:/a/b" → memory → /a/b; "0::/a" → "" → /a (the v2 hierarchy).
  const text = await readFile("/proc/self/cgroup", "utf8").catch(() => "");
  const own = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.split(":").length < 3) continue;
    const [controllers, path] = splitCgroupLine(line);
    for (const controller of controllers.split(",")) own.set(controller, path);
  }
  return own;
}

function splitCgroupLine(line: string): [string, string] {
  const first = line.indexOf(":");
  const second = line.indexOf(":", first + 1);
  return [line.slice(first + 1, second), line.slice(second + 1)];
}

async function readCgroupMounts(): Promise<CgroupMount[]> {
  const text = await readFile("/proc/self/mountinfo", "utf8").catch(() => "");
  const mounts: CgroupMount[] = [];
  for (const line of text.split("\n")) {
    // "... mountpoint options - fstype source superoptions"
    const [before, after] = line.split(" - ");
    if (!before || !after) continue;
    const mountPoint = before.split(" ")[4];
    const [fstype, , superOptions = ""] = after.split(" ");
    if (!mountPoint) continue;
    if (fstype === "cgroup2") mounts.push({ path: mountPoint, version: 2, controllers: [] });
    if (fstype === "cgroup") {
      mounts.push({ path: mountPoint, version: 1, controllers: superOptions.split(",") });
    }
  }
  return mounts;
}

async function unifiedLimiter(
  own: Map<string, string>,
  mounts: CgroupMount[],
): Promise<CgroupLimiter | undefined> {
  const mount = mounts.find((m) => m.version === 2);
  const path = own.get("");
  if (!mount || path === undefined) return undefined;
  const base = join(mount.path, path);
  const available = (await readFile(join(base, "cgroup.controllers"), "utf8").catch(() => "")).split(/\s+/);
  if (!available.includes("memory") || !available.includes("pids")) return undefined;
  try {
    await enableControllers(base);
  } catch {
    return undefined;
  }
  await removeStale([base]);
  return {
    description: `cgroup v2 (${base})`,
    async create(limits) {
      const dir = join(base, `atomix-step-${process.pid}-${nextStep++}`);
      await mkdir(dir);
      await writeFile(join(dir, "memory.max"), String(limits.memoryBytes));
      await writeFile(join(dir, "memory.swap.max"), "0").catch(() => {});
      await writeFile(join(dir, "pids.max"), String(limits.processes));
      const kill = async () => {
        await writeFile(join(dir, "cgroup.kill"), "1").catch(() => killAll([dir]));
      };
      return stepCgroup([dir], kill, async () => counter(join(dir, "memory.events"), "oom_kill"));
    },
  };
}

/**
 * A v2 cgroup may only hand controllers to children while it has no
 * processes of its own: the server moves itself into a leaf first.
 */
async function enableControllers(base: string): Promise<void> {
  try {
    await writeFile(join(base, "cgroup.subtree_control"), "+memory +pids");
  } catch {
    const leaf = join(base, "atomix-server");
    await mkdir(leaf, { recursive: true });
    const pids = (await readFile(join(base, "cgroup.procs"), "utf8")).split("\n").filter(Boolean);
    for (const pid of pids) await writeFile(join(leaf, "cgroup.procs"), pid).catch(() => {});
    await writeFile(join(base, "cgroup.subtree_control"), "+memory +pids");
  }
}

async function legacyLimiter(
  own: Map<string, string>,
  mounts: CgroupMount[],
): Promise<CgroupLimiter | undefined> {
  const memoryMount = mounts.find((m) => m.version === 1 && m.controllers.includes("memory"));
  const pidsMount = mounts.find((m) => m.version === 1 && m.controllers.includes("pids"));
  const memoryPath = own.get("memory");
  const pidsPath = own.get("pids");
  if (!memoryMount || !pidsMount || memoryPath === undefined || pidsPath === undefined) return undefined;
  const memoryBase = join(memoryMount.path, memoryPath);
  const pidsBase = join(pidsMount.path, pidsPath);
  await removeStale([memoryBase, pidsBase]);
  const limiter: CgroupLimiter = {
    description: `cgroup v1 (${memoryBase}, ${pidsBase})`,
    async create(limits) {
      const name = `atomix-step-${process.pid}-${nextStep++}`;
      const memory = join(memoryBase, name);
      const pids = join(pidsBase, name);
      await mkdir(memory);
      try {
        await mkdir(pids);
        await writeFile(join(memory, "memory.limit_in_bytes"), String(limits.memoryBytes));
        await writeFile(join(memory, "memory.memsw.limit_in_bytes"), String(limits.memoryBytes)).catch(
          () => {},
        );
        await writeFile(join(pids, "pids.max"), String(limits.processes));
      } catch (error) {
        await rmdir(memory).catch(() => {});
        await rmdir(pids).catch(() => {});
        throw error;
      }
      return stepCgroup(
        [memory, pids],
        () => killAll([memory, pids]),
        async () => counter(join(memory, "memory.oom_control"), "oom_kill"),
      );
    },
  };
  // Checked once: a hierarchy we may read but not write is no limit at all.
  try {
    await (await limiter.create({ memoryBytes: 64 * 1024 * 1024, processes: 8 })).remove();
  } catch {
    return undefined;
  }
  return limiter;
}

function stepCgroup(dirs: string[], kill: () => Promise<void>, oomKills: () => Promise<number>): StepCgroup {
  return {
    procsFiles: dirs.map((dir) => join(dir, "cgroup.procs")),
    kill,
    outOfMemory: async () => (await oomKills()) > 0,
    async remove() {
      for (let attempt = 0; attempt < 50; attempt++) {
        await kill();
        const left = await Promise.all(
          dirs.map((dir) =>
            rmdir(dir).then(
              () => false,
              (e) => e.code !== "ENOENT",
            ),
          ),
        );
        if (!left.some(Boolean)) return;
        await sleep(20);
      }
    },
  };
}

/** v1 has no cgroup.kill: SIGKILL every pid listed until none is left. */
async function killAll(dirs: string[]): Promise<void> {
  for (let round = 0; round < 20; round++) {
    let found = false;
    for (const dir of dirs) {
      const text = await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => "");
      for (const pid of text.split("\n").filter(Boolean)) {
        found = true;
        try {
          process.kill(Number(pid), "SIGKILL");
        } catch {
          // Gone already.
        }
      }
    }
    if (!found) return;
    await sleep(10);
  }
}

/**
 * Step cgroups of servers that died mid-step (SIGKILL, a crash): their
 * processes are gone with the sandbox, the empty cgroups are removed here.
 */
async function removeStale(bases: string[]): Promise<void> {
  for (const base of bases) {
    for (const name of await readdir(base).catch(() => [])) {
      const owner = /^atomix-step-(\d+)-\d+$/.exec(name)?.[1];
      if (owner === undefined || isAlive(Number(owner))) continue;
      await killAll([join(base, name)]);
      await rmdir(join(base, name)).catch(() => {});
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

async function counter(file: string, name: string): Promise<number> {
  const text = await readFile(file, "utf8").catch(() => "");
  const match = new RegExp(`^${name} (\\d+)$`, "m").exec(text);
  return match ? Number(match[1]) : 0;
}
