import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createPluginClient, type PluginClient } from "atomix-plugins-client/plugin-client";
import { Code } from "atomix-plugins-core/errors/plugin-error";
import type { BuildKey } from "atomix-plugins-core/model/build-key";
import { chromium } from "playwright-core";
import { failure } from "./helpers/failure.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const key = (name: string, runtime = "1.0.0"): BuildKey => ({
  runtime: { version: runtime, buildVersion: "node20" },
  plugin: { name, version: "1.0.0" },
});

describe("catalog page and metrics on the HTTP port", () => {
  let server: ServerProcess;
  let client: PluginClient;

  before(async () => {
    server = await startServerProcess();
    client = createPluginClient({ address: server.address });
    await client.push(key("counter"), [randomBytes(1000)]);
    await client.push(key("@acme/driver", "2.0.0"), [randomBytes(2000)]);
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  it("lists the stored artifacts in a real browser, and filters them", async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      await page.goto(`http://${server.http}/`);
      assert.equal(await page.title(), "atomix-plugins catalog");
      const plugins = await page.locator("td.plugin").allTextContents();
      assert.deepEqual(plugins.sort(), ["@acme/driver@1.0.0", "counter@1.0.0"]);
      const command = await page
        .locator("tr", { hasText: "counter@1.0.0" })
        .locator("code.command")
        .textContent();
      assert.match(command ?? "", /atomix-plugins pull counter@1\.0\.0 --runtime 1\.0\.0 --build node20/);

      await page.fill("input[name=q]", "acme");
      await page.click("button[type=submit]");
      await page.waitForURL(/q=acme/);
      assert.deepEqual(await page.locator("td.plugin").allTextContents(), ["@acme/driver@1.0.0"]);
      assert.match((await page.locator(".meta").textContent()) ?? "", /1 artifact matching “acme”/);
    } finally {
      await browser.close();
    }
  });

  it("shows a page of at most its limit, with a link to the next, and filters by plugin and runtime", async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      await page.goto(`http://${server.http}/?limit=1`);
      const first = await page.locator("td.plugin").allTextContents();
      assert.equal(first.length, 1);
      assert.match((await page.locator(".meta").textContent()) ?? "", /1 artifact on this page/);
      await page.click("a.next");
      await page.waitForURL(/page=/);
      const second = await page.locator("td.plugin").allTextContents();
      assert.equal(second.length, 1);
      assert.deepEqual([...first, ...second].sort(), ["@acme/driver@1.0.0", "counter@1.0.0"]);
      assert.equal(await page.locator("a.next").count(), 0, "the last page links to no next one");
      await page.click("a.first");
      await page.waitForURL((url) => !url.searchParams.has("page"));
      assert.deepEqual(await page.locator("td.plugin").allTextContents(), first);

      await page.goto(`http://${server.http}/`);
      await page.fill("input[name=plugin]", "counter");
      await page.click("button[type=submit]");
      await page.waitForURL(/plugin=counter/);
      assert.deepEqual(await page.locator("td.plugin").allTextContents(), ["counter@1.0.0"]);
      await page.fill("input[name=plugin]", "");
      await page.fill("input[name=runtime]", "2.0.0");
      await page.click("button[type=submit]");
      await page.waitForURL(/runtime=2\.0\.0/);
      assert.deepEqual(await page.locator("td.plugin").allTextContents(), ["@acme/driver@1.0.0"]);

      const forged = await fetch(`http://${server.http}/?page=bm90LWEtdG9rZW4`);
      assert.equal(forged.status, 400);
      assert.match(await forged.text(), /page token is not one this server gave out/);
    } finally {
      await browser.close();
    }
  });

  it("refuses a push whose plugin name is markup, so no stored name carries it to the page", async () => {
    const refused = await failure(client.push(key("<script>alert(1)</script>"), [randomBytes(10)]));
    assert.equal(refused.code, Code.InvalidArgument, refused.message);
    assert.match(refused.message, /plugin\.name/);
  });

  it("shows markup from a link's query as text, and runs none of it", async () => {
    // What a stranger can put on the page: a link to it with a filter of their choosing.
    const markup = `<script>window.injected = "script"</script><img src=x onerror="window.injected = 'img'">`;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      const dialogs: string[] = [];
      page.on("dialog", (dialog) => {
        dialogs.push(dialog.message());
        void dialog.dismiss();
      });
      await page.goto(`http://${server.http}/?${new URLSearchParams({ q: markup, plugin: markup })}`);
      assert.equal(await page.title(), "atomix-plugins catalog");
      const meta = (await page.locator(".meta").first().textContent()) ?? "";
      assert.ok(meta.includes(`“${markup}”`), `the query is shown as written: ${meta}`);
      assert.ok(meta.includes(`plugin ${markup}`), `the plugin filter is shown as written: ${meta}`);
      assert.equal(await page.inputValue("input[name=q]"), markup);
      assert.equal(await page.inputValue("input[name=plugin]"), markup);
      // None of it became an element, and none of it ran (the page load event has fired by now).
      assert.equal(await page.locator("script, img").count(), 0);
      assert.equal(await page.evaluate(() => (globalThis as { injected?: string }).injected), undefined);
      assert.deepEqual(dialogs, []);
    } finally {
      await browser.close();
    }
  });

  it("counts pulls in /metrics and answers /healthz", async () => {
    const dir = await tempDir();
    try {
      await client.pull(key("counter"), { to: `${dir.path}/counter` });
    } finally {
      await dir.remove();
    }
    const metrics = await (await fetch(`http://${server.http}/metrics`)).text();
    assert.match(metrics, /atomix_plugins_pulls_total\{code="OK"\} [1-9]/);
    assert.match(metrics, /atomix_plugins_pulled_bytes_total [1-9]/);
    // Process metrics under one prefix, as prom-client names them after it.
    assert.match(metrics, /^atomix_plugins_process_cpu_seconds_total \d/m);
    assert.match(metrics, /^atomix_plugins_nodejs_heap_size_used_bytes \d/m);
    assert.doesNotMatch(metrics, /process_process_|^process_|^nodejs_/m);
    const health = await fetch(`http://${server.http}/healthz`);
    assert.equal(health.status, 200);
  });
});

describe("the pull command on the catalog page", () => {
  let server: ServerProcess;
  let client: PluginClient;
  // Valid npm names (of old packages) that a POSIX shell reads specially.
  const names = ["x'(1)!*~", "@acme/driver's(v2)"];

  before(async () => {
    server = await startServerProcess();
    client = createPluginClient({ address: server.address });
    for (const name of names) await client.push(key(name), [randomBytes(10)]);
  });
  after(async () => {
    client.close();
    await server.stop();
  });

  it("pastes into bash as one word per argument, the plugin's exact name among them", async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    try {
      const page = await browser.newPage();
      await page.goto(`http://${server.http}/`);
      for (const name of names) {
        const command = await page
          .locator("tr", { has: page.locator("td.plugin", { hasText: `${name}@1.0.0` }) })
          .locator("code.command")
          .textContent();
        assert.ok(command, `a command for ${name}`);
        execFileSync("bash", ["-n", "-c", command]); // throws on a syntax error
        // A stub in place of the CLI prints the words it receives, NUL-terminated.
        const received = execFileSync("bash", ["-c", `atomix-plugins() { printf '%s\\0' "$@"; }\n${command}`])
          .toString()
          .split("\0")
          .slice(0, -1);
        assert.deepEqual(received, [
          "pull",
          `${name}@1.0.0`,
          "--runtime",
          "1.0.0",
          "--build",
          "node20",
          "--server",
          server.address,
          "-o",
          "plugin",
        ]);
      }
    } finally {
      await browser.close();
    }
  });
});
