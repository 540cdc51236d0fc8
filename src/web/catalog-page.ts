import { ANNOTATIONS } from "atomix-plugins-core/model/annotations";
import type { ArtifactManifest } from "atomix-plugins-core/model/artifact";
import { plural } from "atomix-plugins-core/model/plural";

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c,
  );

/**
 * `word` as one word of a POSIX shell command: as is when it holds only
 * characters no shell treats specially, else in single quotes (a quote
 * inside written '\''). npm names may hold ' ( ) ! * ~.
 */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9@%+=:,./_-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

export interface CatalogView {
  /** One page of artifacts, already filtered: all of them are shown. */
  manifests: ArtifactManifest[];
  /** The free-text filter (`q`), the exact plugin name and runtime version filters. */
  query: string;
  plugin?: string;
  runtime?: string;
  /** The page size asked for (`limit`), carried into the page links; undefined for the default. */
  limit?: number | undefined;
  /** The continuation token of the next page; undefined on the last. */
  next?: string | undefined;
  /** Whether this is a later page (a link back to the first is shown). */
  continued?: boolean;
  storeDescription: string;
  /**
   * Whether this server holds an artifact's bytes on its own disk; given on
   * a replica or tier, whose page then says so of each artifact.
   */
  heldHere?: ((manifest: ArtifactManifest) => boolean) | undefined;
  /**
   * Whether an artifact was stored with signed provenance: only those get a
   * provenance link (for the others /provenance answers 404). Every
   * artifact gets one when not given.
   */
  signed?: ((manifest: ArtifactManifest) => boolean) | undefined;
  /** A line about the replica's content cache (what it holds, what it fetched), on a replica or tier. */
  cacheSummary?: string | undefined;
  /** The gRPC address clients should use, for the copyable commands. */
  grpcAddress: string;
  /** More sections, rendered (runtime releases, recent builds): shown below the artifacts. */
  appendix?: string;
}

/**
 * The catalog: one server-rendered page listing what the store holds, with a
 * filter and the command that pulls each artifact. No script, so it works in
 * any browser and behind any proxy.
 */
export function renderCatalogPage(view: CatalogView): string {
  const shown = view.manifests;
  const filtered = Boolean(view.query.trim() || view.plugin || view.runtime);
  const rows = shown
    .map((m) => {
      const spec = `${m.key.plugin.name}@${m.key.plugin.version}`;
      const toolchain = m.annotations[ANNOTATIONS.toolchain];
      const source = m.annotations[ANNOTATIONS.source];
      const origin = toolchain ? `built by ${toolchain}${source ? ` from ${source}` : ""}` : "pushed";
      const provenance = `/provenance?${new URLSearchParams({
        plugin: spec,
        runtime: m.key.runtime.version,
        build: m.key.runtime.buildVersion,
      }).toString()}`;
      const command = [
        "atomix-plugins pull",
        shellQuote(spec),
        `--runtime ${shellQuote(m.key.runtime.version)}`,
        `--build ${shellQuote(m.key.runtime.buildVersion)}`,
        `--server ${shellQuote(view.grpcAddress)}`,
        "-o plugin",
      ].join(" ");
      return `<tr>
  <td class="plugin">${escapeHtml(spec)}</td>
  <td>${escapeHtml(m.key.runtime.version)}</td>
  <td>${escapeHtml(m.key.runtime.buildVersion)}</td>
  <td class="num">${formatSize(m.size)}</td>
  <td><code title="${escapeHtml(m.digest)}">${escapeHtml(m.digest.slice(0, 19))}…</code></td>
  <td class="origin">${escapeHtml(origin)}${
    view.signed?.(m) === false ? " · unsigned" : ` · <a href="${escapeHtml(provenance)}">provenance</a>`
  }</td>${view.heldHere ? `\n  <td class="here">${view.heldHere(m) ? "held here" : "upstream"}</td>` : ""}
  <td><time datetime="${escapeHtml(m.createdAt)}">${escapeHtml(m.createdAt.replace("T", " ").slice(0, 19))}</time></td>
  <td><code class="command">${escapeHtml(command)}</code></td>
</tr>`;
    })
    .join("\n");
  const conditions = [
    view.query.trim() ? `“${escapeHtml(view.query)}”` : "",
    view.plugin ? `plugin ${escapeHtml(view.plugin)}` : "",
    view.runtime ? `runtime ${escapeHtml(view.runtime)}` : "",
  ].filter(Boolean);
  const where = view.continued || view.next ? " on this page" : "";
  const summary = `${plural(shown.length, "artifact")}${conditions.length ? ` matching ${conditions.join(", ")}` : ""}${where}`;
  const link = (page: string | undefined) => {
    const params = new URLSearchParams();
    if (view.query) params.set("q", view.query);
    if (view.plugin) params.set("plugin", view.plugin);
    if (view.runtime) params.set("runtime", view.runtime);
    if (view.limit !== undefined) params.set("limit", String(view.limit));
    if (page) params.set("page", page);
    const text = params.toString();
    return escapeHtml(text ? `/?${text}` : "/");
  };
  const pager = [
    view.continued ? `<a class="first" href="${link(undefined)}">First page</a>` : "",
    view.next ? `<a class="next" rel="next" href="${link(view.next)}">Next page</a>` : "",
  ]
    .filter(Boolean)
    .join(" · ");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>atomix-plugins catalog</title>
<style>
  body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #1d232b; background: #fafbfc; }
  h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
  .meta { color: #59636e; margin-bottom: 1rem; }
  form { margin-bottom: 1rem; display: flex; gap: .5rem; }
  .pager { margin: .75rem 0; }
  input[type=text] { padding: .35rem .5rem; border: 1px solid #c8ced6; border-radius: 4px; }
  input[type=search] { padding: .35rem .5rem; min-width: 18rem; border: 1px solid #c8ced6; border-radius: 4px; }
  button { padding: .35rem .8rem; border: 1px solid #1f6feb; background: #1f6feb; color: white; border-radius: 4px; }
  table { border-collapse: collapse; width: 100%; background: white; }
  th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #e4e8ec; vertical-align: top; }
  th { background: #f0f3f6; font-weight: 600; }
  td.num, time { white-space: nowrap; }
  td.num { text-align: right; }
  td.plugin, td.release, td.built-plugin { font-weight: 600; }
  code { font: 12px ui-monospace, monospace; }
  code.command { color: #59636e; user-select: all; }
  .empty { padding: 2rem; text-align: center; color: #59636e; }
  h2 { font-size: 1.1rem; margin: 2rem 0 .5rem; }
  tr.failure td { color: #9a2a20; }
  ul.failures { margin: .25rem 0 0 1rem; padding: 0; color: #9a2a20; }
</style>
</head>
<body>
<h1>Plugin catalog</h1>
<p class="meta">${summary} · ${escapeHtml(view.storeDescription)} · gRPC at <code>${escapeHtml(view.grpcAddress)}</code> · <a href="/metrics">metrics</a></p>${
    view.cacheSummary ? `\n<p class="meta cache">${escapeHtml(view.cacheSummary)}</p>` : ""
  }
<form method="get" action="/">
  <input type="search" name="q" value="${escapeHtml(view.query)}" placeholder="plugin, version, runtime or build" aria-label="filter">
  <input type="text" name="plugin" value="${escapeHtml(view.plugin ?? "")}" placeholder="exact plugin name" aria-label="plugin name">
  <input type="text" name="runtime" value="${escapeHtml(view.runtime ?? "")}" placeholder="runtime version" aria-label="runtime version">
  ${view.limit !== undefined ? `<input type="hidden" name="limit" value="${view.limit}">` : ""}
  <button type="submit">Filter</button>
</form>
${
  shown.length === 0
    ? `<p class="empty">No artifacts${filtered ? " match this filter" : view.continued ? " on this page" : " yet: compile or push one"}${view.next ? "; the next page may hold some" : ""}.</p>`
    : `<table>
<thead><tr><th>Plugin</th><th>Runtime</th><th>Build</th><th>Size</th><th>Digest</th><th>Origin</th>${view.heldHere ? "<th>Bytes</th>" : ""}<th>Stored</th><th>Pull with</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`
}
${pager ? `<p class="pager">${pager}</p>` : ""}
${view.appendix ?? ""}
</body>
</html>
`;
}

/**
 * Whether `manifest` matches the page's free-text filter: a case-insensitive
 * substring of its plugin name or version, runtime version or build.
 */
export function matchesQuery(manifest: ArtifactManifest, query: string): boolean {
  const wanted = query.trim().toLowerCase();
  if (!wanted) return true;
  const { plugin, runtime } = manifest.key;
  return [plugin.name, plugin.version, runtime.version, runtime.buildVersion].some((field) =>
    field.toLowerCase().includes(wanted),
  );
}
