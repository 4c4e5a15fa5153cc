// Bundles the dashboard's browser code (web/src) into fleet/web/static/dist/, which Fleet serves
// itself and git ignores. `npm run build` once, `npm run watch` while editing.
import * as esbuild from "esbuild";
import { readFile, rm, writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const outdir = path.join(root, "fleet/web/static/dist");
const watch = process.argv.includes("--watch");

const options = {
  absWorkingDir: root,
  entryPoints: [
    { in: "web/src/app.js", out: "app" },
    { in: "web/src/app.css", out: "app" },
  ],
  outdir,
  entryNames: "[name]",
  chunkNames: "chunks/[name]-[hash]",
  bundle: true,
  splitting: true, // the chart library loads only on pages with a chart
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  minify: !watch,
  sourcemap: "linked",
  legalComments: "linked", // third-party licences stay next to the bundle
  logLevel: "info",
};

await rm(outdir, { recursive: true, force: true });
if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}

// The bundle carries third-party code: ship each package's licence next to it.
const notices = [];
for (const name of Object.keys(JSON.parse(await readFile(path.join(root, "package.json"))).dependencies)) {
  const licence = await readFile(path.join(root, "node_modules", name, "LICENSE"), "utf8");
  notices.push(`${name}\n${"=".repeat(name.length)}\n\n${licence.trim()}\n`);
}
await writeFile(path.join(outdir, "THIRD_PARTY_LICENSES.txt"), notices.join("\n"));
