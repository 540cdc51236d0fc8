import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { chromium } from "playwright-core";
import { createPluginClient, type PluginClient } from "../src/client/plugin-client.js";
import type { BuildKey } from "../src/model/build-key.js";
import { type ServerProcess, startServerProcess, tempDir } from "./helpers/server-process.js";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

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
    await client.push(key("<script>alert(1)</script>"), [randomBytes(10)]).catch(() => undefined);
  });

  after(async () => {
    client.close();
    await server.stop();
  });

  it("lists the stored artifacts in a real browser, and filters them", async () => {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
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
      assert.match((await page.locator(".meta").textContent()) ?? "", /1 of 2 artifacts match/);
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
    const health = await fetch(`http://${server.http}/healthz`);
    assert.equal(health.status, 200);
  });
});
