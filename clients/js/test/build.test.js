// The committed build is the build of the committed sources: dist/ (what `import
// "duologue-client"` loads) and the copy the gateway serves to the demo page.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(here, "dist");

test("dist/ is what tsc makes of src/ (run `npm run build` after a change)", () => {
  const out = mkdtempSync(join(tmpdir(), "duologue-client-"));
  try {
    execFileSync(join(here, "node_modules", ".bin", "tsc"), ["-p", join(here, "tsconfig.json"), "--outDir", out],
      { stdio: "inherit" });
    const built = readdirSync(out).sort();
    assert.deepEqual(readdirSync(dist).sort(), built);
    for (const name of built) {
      assert.equal(readFileSync(join(dist, name), "utf8"), readFileSync(join(out, name), "utf8"), `dist/${name} is stale`);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("the gateway serves the same modules (gateway/static/client/)", () => {
  const served = join(here, "..", "..", "gateway", "static", "client");
  const modules = readdirSync(dist).filter((n) => n.endsWith(".js")).sort();
  assert.deepEqual(readdirSync(served).sort(), modules);
  for (const name of modules) {
    assert.equal(readFileSync(join(served, name), "utf8"), readFileSync(join(dist, name), "utf8"), `${name} differs`);
  }
});
