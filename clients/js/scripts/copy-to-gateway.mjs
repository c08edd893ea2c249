// Copy the built modules next to the demo page: the gateway serves them at /client/
// (gateway/static/client/), so the page needs no build step and no node_modules.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "..", "dist");
const target = join(here, "..", "..", "..", "gateway", "static", "client");
rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
for (const name of readdirSync(dist).filter((n) => n.endsWith(".js"))) {
  copyFileSync(join(dist, name), join(target, name));
}
