// A world of real Duologue processes for one test file (test/world.py does the work):
// gateways, a projector, tokens; everything stopped and removed by `close()`.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export function python() {
  if (process.env.DUOLOGUE_PYTHON) return process.env.DUOLOGUE_PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export class World {
  static async open() {
    const child = spawn(python(), [join(ROOT, "clients", "js", "test", "world.py")], {
      cwd: ROOT, stdio: ["pipe", "pipe", "inherit"],
    });
    const world = new World(child);
    world.prefix = (await world.next()).prefix;
    return world;
  }

  constructor(child) {
    this.child = child;
    this.answers = [];
    this.waiting = [];
    this.exited = new Promise((resolve) => child.on("exit", resolve));
    createInterface({ input: child.stdout }).on("line", (line) => {
      const answer = JSON.parse(line);
      const waiter = this.waiting.shift();
      if (waiter) waiter(answer); else this.answers.push(answer);
    });
    child.on("exit", (code) => {
      for (const waiter of this.waiting.splice(0)) waiter({ error: `world.py exited ${code}` });
    });
  }

  next() {
    if (this.answers.length) return Promise.resolve(this.answers.shift());
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  async ask(command) {
    this.child.stdin.write(JSON.stringify(command) + "\n");
    const answer = await this.next();
    if (answer.error) throw new Error(`world: ${answer.error}`);
    return answer;
  }

  /** A gateway on this world's prefix; `env`: extra DUOLOGUE_* settings. */
  async gateway(env = {}) {
    const { name, port } = await this.ask({ op: "gateway", env });
    return { name, port, url: `http://127.0.0.1:${port}` };
  }

  kill(gateway) {
    return this.ask({ op: "kill", name: gateway.name });
  }

  start(gateway) {
    return this.ask({ op: "start", name: gateway.name });
  }

  projector() {
    return this.ask({ op: "projector" });
  }

  async token(user, ttl = 3600) {
    return (await this.ask({ op: "token", user, ttl })).token;
  }

  async close() {
    this.child.stdin.end();
    await this.exited;
  }
}

let counter = 0;
/** A user id of this run's own. */
export function uid(name) {
  counter += 1;
  return `${name}${process.pid}x${counter}${Math.random().toString(36).slice(2, 7)}`;
}

/** Resolve when `predicate()` is true (polled), or throw after `ms`. */
export async function until(predicate, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
