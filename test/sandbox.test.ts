import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { hostname, totalmem } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, type PluginError } from "atomix-plugins-core/errors/plugin-error";
import { createSandbox, type Sandbox } from "../src/compiler/sandbox/sandbox.js";
import { testSandbox } from "./helpers/sandbox.js";
import { tempDir } from "./helpers/server-process.js";

/**
 * The build sandbox on its own: what a step can see, reach and use up. Each
 * case runs a real program under bubblewrap, as builds do.
 */
describe("build sandbox", () => {
  let sandbox: Sandbox;
  let dir: { path: string; remove: () => Promise<void> };
  let work: string;
  let server: Server;
  let port: number;
  const canary = `canary-${randomBytes(8).toString("hex")}`;

  before(async () => {
    sandbox = await testSandbox();
    dir = await tempDir("atomix-sandbox-");
    work = join(dir.path, "work");
    await mkdir(work);
    await writeFile(join(dir.path, "secret.txt"), canary);
    server = createServer((_request, response) => response.end(canary));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    server.close();
    await dir.remove();
  });

  const sh = (script: string, extra: Partial<Parameters<Sandbox["run"]>[0]> = {}) =>
    sandbox.run({
      file: "/bin/sh",
      args: ["-c", script],
      cwd: work,
      writable: [work],
      env: { PATH: "/usr/bin:/bin" },
      timeoutMs: 20_000,
      ...extra,
    });

  it("starts with bubblewrap on this machine", () => {
    assert.equal(sandbox.kind, "bwrap", sandbox.description);
  });

  it("shows a step only the paths it names, /usr and its own /proc", async () => {
    const result = await sh(
      `cat ${join(dir.path, "secret.txt")}; ls /; cat /proc/1/cmdline; echo; cat /proc/self/environ`,
    );
    assert.ok(!result.stdout.includes(canary), "the host file is not there");
    assert.match(result.stderr, /No such file or directory/);
    const topLevel = result.stdout.split("\n").filter((line) => /^[a-z0-9]+$/.test(line));
    const allowed = ["bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"];
    assert.ok(
      topLevel.includes("usr") && !topLevel.includes("work") && !topLevel.includes("root"),
      topLevel.join(" "),
    );
    assert.deepEqual(
      topLevel.filter((name) => !allowed.includes(name)),
      [],
    );
    assert.ok(!result.stdout.includes("node"), "PID 1 is the sandbox's, not the host's");
    assert.ok(result.stdout.includes("PATH=/usr/bin:/bin"), "only the step's environment");
  });

  it("gives a step a host name of its own, and neither the kernel's release nor the host's memory in /proc", async () => {
    const host = hostname();
    const release = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
    const memTotal = /^MemTotal:.*$/m.exec(readFileSync("/proc/meminfo", "utf8"))?.[0] ?? "";
    assert.ok(host && release && memTotal, "the host has all three");
    const result = await sh(
      "hostname; cat /proc/sys/kernel/hostname; cat /proc/version /proc/sys/kernel/osrelease /proc/sys/kernel/version /proc/cmdline /proc/meminfo; echo done",
    );
    assert.equal(result.exitCode, 0, result.stderr);
    assert.deepEqual(result.stdout.split("\n"), ["atomix-build", "atomix-build", "done", ""]);
    for (const hostText of [host, release, memTotal]) {
      assert.ok(!result.stdout.includes(hostText), `the step sees ${hostText}`);
    }
    // A toolchain that sizes itself by the memory (V8's heap limit) still gets it: libuv falls back to sysinfo(2).
    const node = await sandbox.run({
      file: process.execPath,
      args: ["-e", "console.log(require('node:os').totalmem())"],
      cwd: "/tmp",
      timeoutMs: 20_000,
    });
    assert.equal(node.stdout.trim(), String(totalmem()));
  });

  it("keeps a readable path that is a link a link, to its target, and shows nothing else there", async () => {
    // An installation whose node_modules is linked in from elsewhere: the
    // programs import through the link's path.
    const elsewhere = join(dir.path, "elsewhere", "node_modules");
    await mkdir(join(elsewhere, "tar"), { recursive: true });
    await writeFile(join(elsewhere, "tar", "index.js"), "tar's code");
    await writeFile(join(dir.path, "elsewhere", "beside.txt"), canary);
    const linked = join(dir.path, "package", "node_modules");
    await mkdir(join(dir.path, "package"));
    await symlink(elsewhere, linked);
    const result = await sh(
      `cat ${join(linked, "tar", "index.js")}; echo; readlink ${linked}; cat ${join(dir.path, "elsewhere", "beside.txt")}`,
      {
        readable: [linked],
      },
    );
    assert.match(result.stdout, /^tar's code\n/);
    assert.ok(result.stdout.includes(elsewhere), "the same link inside");
    assert.ok(!result.stdout.includes(canary), "only the link's target is there, not its folder");
  });

  it("lets a step write only where it may", async () => {
    const result = await sh("echo x > inside && echo x > /usr/outside; echo x > /etc/outside; ls");
    assert.match(result.stdout, /inside/);
    assert.match(result.stderr, /Read-only file system/);
  });

  it("gives a step no network, not even the host's loopback", async () => {
    const result = await sandbox.run({
      file: process.execPath,
      args: [
        "-e",
        `fetch("http://127.0.0.1:${port}/").then(async (r) => console.log("reached", await r.text()), (e) => console.log("unreachable", e.cause?.code))`,
      ],
      cwd: "/tmp",
      timeoutMs: 20_000,
    });
    assert.match(result.stdout, /unreachable/);
    assert.ok(!result.stdout.includes(canary));
  });

  it("lets a step signal nothing outside it", async () => {
    const result = await sh(`kill -9 ${process.pid}; echo "kill exit $?"`);
    assert.match(result.stdout, /kill exit 1/);
    assert.match(result.stderr, /No such process/);
  });

  it("stops a step that uses more than its memory, buffers included", async () => {
    const result = await sandbox.run({
      file: process.execPath,
      args: [
        "-e",
        "const kept = []; for (let i = 0; i < 64; i++) kept.push(Buffer.alloc(16 * 1024 * 1024, 1)); console.log('allocated')",
      ],
      cwd: "/tmp",
      limits: { memoryBytes: 256 * 1024 * 1024 },
      timeoutMs: 30_000,
    });
    assert.ok(!result.stdout.includes("allocated"), "1 GiB of buffers did not fit in 256 MiB");
    assert.equal(result.outOfMemory, true);
  });

  it("bounds a step's memory by its address space where no cgroup can be had", async () => {
    const uncontained = await createSandbox({ mode: "bwrap", cgroups: false });
    assert.match(uncontained.description, /RLIMIT_AS/);
    const result = await uncontained.run({
      file: process.execPath,
      args: [
        "-e",
        "const kept = []; try { for (let i = 0; i < 64; i++) kept.push(Buffer.alloc(16 * 1024 * 1024, 1)); console.log('allocated') } catch { console.log('refused at', kept.length * 16, 'MiB') }",
      ],
      cwd: "/tmp",
      limits: { memoryBytes: 256 * 1024 * 1024 },
      timeoutMs: 30_000,
    });
    assert.ok(
      !result.stdout.includes("allocated"),
      `1 GiB of buffers did not fit: ${result.stdout}${result.stderr}`,
    );
  });

  it("probes an unavailable sandbox again at a later build, once for a thousand callers, and uses bubblewrap once it works", async () => {
    // A bubblewrap stand-in that counts its starts: failing first, the real one after.
    const starts = join(dir.path, "bwrap-starts");
    const bwrap = join(dir.path, "late-bwrap");
    const standIn = (then: string) =>
      writeFile(bwrap, `#!/bin/sh\necho start >> '${starts}'\n${then}\n`, { mode: 0o755 });
    const startCount = () => readFileSync(starts, "utf8").split("\n").filter(Boolean).length;
    await standIn("echo 'bwrap: No permissions to create new namespace' >&2; exit 1");
    const late = await createSandbox({ mode: "bwrap", bwrap, reprobeIntervalMs: 100 });
    assert.equal(late.kind, "unavailable");
    assert.equal(startCount(), 1, "probed once at creation");

    const refusals = await Promise.allSettled(Array.from({ length: 1000 }, () => late.ready()));
    for (const refusal of refusals) {
      assert.equal(refusal.status, "rejected");
      const error = (refusal as PromiseRejectedResult).reason as PluginError;
      assert.equal(error.code, Code.FailedPrecondition);
      assert.match(error.message, /apt-get install bubblewrap.*no restart needed/);
    }
    assert.equal(startCount(), 2, "a thousand refused callers shared one probe");

    await standIn(`exec ${execFileSync("sh", ["-c", "command -v bwrap"], { encoding: "utf8" }).trim()} "$@"`);
    await late.ready();
    assert.equal(late.kind, "bwrap", late.description);
    const result = await late.run({
      file: "/bin/sh",
      args: ["-c", "echo contained"],
      cwd: work,
      writable: [work],
    });
    assert.equal(result.stdout.trim(), "contained");
  });

  it("bounds the processes of a step", async () => {
    const result = await sh("i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; echo started $i", {
      limits: { processes: 32 },
    });
    assert.match(result.stderr, /fork|Resource temporarily unavailable|Cannot fork/i);
  });

  it("bounds the size of any file a step writes", async () => {
    const result = await sh("head -c 8388608 /dev/zero > big; wc -c < big", {
      limits: { fileBytes: 1024 * 1024 },
    });
    assert.ok(!result.stdout.includes("8388608"), result.stdout);
  });

  it("kills every process of a step when its time is up, however they hide", async () => {
    const marker = `atomix-sandbox-orphan-${randomBytes(4).toString("hex")}`;
    const started = Date.now();
    const result = await sh(`(setsid sh -c 'exec -a ${marker} sleep 600' &) ; exec sleep 600`, {
      timeoutMs: 1000,
    });
    assert.equal(result.timedOut, true);
    assert.ok(Date.now() - started < 10_000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const left = execFileSync("ps", ["-eo", "args"], { encoding: "utf8" })
      .split("\n")
      .filter((line) => line.includes(marker));
    assert.deepEqual(left, [], "no process of the step outlives it");
  });
});
