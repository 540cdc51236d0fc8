import type { PrewarmProgress } from "atomix-plugins-core/gen/atomix/plugins/admin/v1/admin";
import { type BuildKey, formatBuildKey } from "atomix-plugins-core/model/build-key";
import type { BuildRecord } from "atomix-plugins-core/model/build-record";
import type { RuntimeReleaseSummary } from "atomix-plugins-core/model/runtime-release";

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );

const time = (iso: string) =>
  `<time datetime="${escapeHtml(iso)}">${escapeHtml(iso.replace("T", " ").slice(0, 19))}</time>`;

/** The link to one key's build log on this port. */
export function buildLogHref(key: BuildKey): string {
  const query = new URLSearchParams({
    runtime: key.runtime.version,
    build: key.runtime.buildVersion,
    plugin: key.plugin.name,
    version: key.plugin.version,
  });
  return `/build-log?${query.toString()}`;
}

function prewarmCell(prewarm: PrewarmProgress | undefined): string {
  if (!prewarm || prewarm.state === "none") return "—";
  if (prewarm.state === "off") return "off";
  const done = prewarm.built + prewarm.skipped + prewarm.failed;
  const failures = prewarm.failures
    .map(
      (failure) =>
        `<li>${escapeHtml(`${failure.plugin?.name}@${failure.plugin?.version}`)} (${escapeHtml(failure.buildVersion)}): ${escapeHtml(failure.code)}: ${escapeHtml(failure.message.split("\n")[0] ?? "")}</li>`,
    )
    .join("");
  return `${escapeHtml(prewarm.state)}: ${done}/${prewarm.planned} (${prewarm.built} built, ${prewarm.skipped} stored, ${prewarm.failed} failed)${prewarm.previousVersion ? ` from ${escapeHtml(prewarm.previousVersion)}` : ""}${failures ? `<ul class="failures">${failures}</ul>` : ""}`;
}

/** The catalog page's table of registered runtime releases. */
export function renderRuntimeSection(
  releases: readonly RuntimeReleaseSummary[],
  prewarm: (version: string) => PrewarmProgress | undefined,
): string {
  const rows = releases
    .map(
      (release) => `<tr>
  <td class="release">${escapeHtml(release.version)}</td>
  <td>${escapeHtml(release.toolchain)}</td>
  <td>${escapeHtml(release.buildVersions.join(", "))}</td>
  <td><code title="${escapeHtml(release.digest)}">${escapeHtml(release.digest.slice(0, 19))}…</code></td>
  <td>${time(release.registeredAt)}</td>
  <td class="prewarm">${prewarmCell(prewarm(release.version))}</td>
</tr>`,
    )
    .join("\n");
  return `<h2 id="runtimes">Runtime releases</h2>
${
  releases.length === 0
    ? `<p class="empty">No runtime release is registered: atomix-plugins runtime add DIR.</p>`
    : `<table class="runtimes">
<thead><tr><th>Version</th><th>Toolchain</th><th>Builds</th><th>Digest</th><th>Registered</th><th>Pre-warm</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`
}`;
}

/** The catalog page's list of recent builds, each linked to its log. */
export function renderBuildSection(records: readonly BuildRecord[]): string {
  const rows = records
    .map(
      (record) => `<tr class="${record.outcome}">
  <td class="built-plugin">${escapeHtml(`${record.key.plugin.name}@${record.key.plugin.version}`)}</td>
  <td>${escapeHtml(record.key.runtime.version)}</td>
  <td>${escapeHtml(record.key.runtime.buildVersion)}</td>
  <td>${escapeHtml(record.outcome)}</td>
  <td>${escapeHtml(record.code)}</td>
  <td>${time(record.finishedAt)}</td>
  <td><a href="${escapeHtml(buildLogHref(record.key))}">log</a></td>
</tr>`,
    )
    .join("\n");
  return `<h2 id="builds">Recent builds</h2>
${
  records.length === 0
    ? `<p class="empty">No build yet.</p>`
    : `<table class="builds">
<thead><tr><th>Plugin</th><th>Runtime</th><th>Build</th><th>Outcome</th><th>Code</th><th>Finished</th><th></th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`
}`;
}

/** One build's record and output, on a page of its own. */
export function renderBuildLogPage(record: BuildRecord): string {
  const fields: [string, string][] = [
    ["build key", formatBuildKey(record.key)],
    ["outcome", `${record.outcome} (${record.code})`],
    ["finished", record.finishedAt],
    ["duration", `${record.durationMs} ms`],
    ["runtime release", record.runtimeDigest || "none"],
    ["artifact", record.artifactDigest || "none"],
    ...Object.entries(record.toolchain),
  ];
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>build log: ${escapeHtml(formatBuildKey(record.key))}</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d232b; background: #fafbfc; }
  th { text-align: left; padding-right: 1rem; }
  pre { background: white; border: 1px solid #e4e8ec; padding: 1rem; overflow-x: auto; font: 12px ui-monospace, monospace; }
</style>
</head>
<body>
<p><a href="/#builds">catalog</a></p>
<h1>Build log</h1>
<table>
${fields.map(([name, value]) => `<tr><th>${escapeHtml(name)}</th><td>${escapeHtml(value)}</td></tr>`).join("\n")}
</table>
${record.message ? `<h2>Message</h2>\n<pre class="message">${escapeHtml(record.message)}</pre>` : ""}
<h2>Output${record.outputTruncated ? " (its last 64 KiB)" : ""}</h2>
<pre class="output">${escapeHtml(record.output)}</pre>
</body>
</html>
`;
}
