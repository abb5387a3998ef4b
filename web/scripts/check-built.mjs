// CI's guard for what is committed but generated: the TypeScript messages in src/gen (from
// ../proto) and the built app in dist/ (embedded into pos-hub by build.rs). Both are
// regenerated into a temporary directory and compared byte for byte; any difference
// fails with the files named and the command that refreshes them.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const web = new URL("..", import.meta.url).pathname;
const tmp = mkdtempSync(join(tmpdir(), "pos-hub-web-check-"));
const bin = (name) => join(web, "node_modules", ".bin", name);
// buf finds protoc-gen-es on PATH, as `npm run` would put it there.
process.env.PATH = `${join(web, "node_modules", ".bin")}:${process.env.PATH}`;

function files(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : [path];
  });
}

function compare(what, committed, fresh) {
  const ours = new Map(files(committed).map((f) => [relative(committed, f), f]));
  const theirs = new Map(files(fresh).map((f) => [relative(fresh, f), f]));
  const problems = [];
  for (const [rel, f] of theirs) {
    if (!ours.has(rel)) problems.push(`missing: ${rel}`);
    else if (!readFileSync(f).equals(readFileSync(ours.get(rel)))) problems.push(`differs: ${rel}`);
  }
  for (const rel of ours.keys()) if (!theirs.has(rel)) problems.push(`not built any more: ${rel}`);
  if (problems.length) {
    console.error(`${what} is out of date with its sources:\n  ${problems.join("\n  ")}`);
  } else {
    console.log(`${what}: up to date (${theirs.size} files)`);
  }
  return problems.length === 0;
}

try {
  execFileSync(bin("buf"), ["generate", "../proto", "--template", "buf.gen.yaml", "--output", tmp,
    "--path", "../proto/pos/v1/hub.proto", "--path", "../proto/pos/v1/events.proto"], { cwd: web, stdio: "inherit" });
  execFileSync(bin("tsc"), ["--noEmit"], { cwd: web, stdio: "inherit" });
  execFileSync(bin("vite"), ["build", "--logLevel", "warn", "--outDir", join(tmp, "dist"), "--emptyOutDir"], {
    cwd: web,
    stdio: "inherit",
  });
  const gen = compare("web/src/gen (npm run gen)", join(web, "src", "gen"), join(tmp, "src", "gen"));
  const dist = compare("web/dist (npm run build)", join(web, "dist"), join(tmp, "dist"));
  if (!gen || !dist) {
    console.error("refresh with: npm --prefix web run gen && npm --prefix web run build, then commit");
    process.exitCode = 1;
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
