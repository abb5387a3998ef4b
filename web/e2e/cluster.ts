// A real 3-node pos-hub group on loopback for the browser tests: a store key, device
// tokens from `pos-hub token issue`, nodes started, SIGKILLed, paused (SIGSTOP) and
// restarted as processes, and the committed log read back through the gRPC-web API.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createPrivateKey, sign } from "node:crypto";
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Event } from "../src/gen/pos/v1/events_pb.js";
import { Consistency, Hub } from "../src/gen/pos/v1/hub_pb.js";

const REPO = resolve(fileURLToPath(import.meta.url), "..", "..", "..");
export const BIN = process.env.POS_HUB_BIN ?? join(REPO, "target", "debug", "pos-hub");
const MENU = join(REPO, "examples", "menu.json");
export const TENANT = "t-demo";
export const STORE = "s-001";

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

function run(args: string[]): string {
  const out = spawnSync(BIN, args, { encoding: "utf8" });
  if (out.status !== 0) throw new Error(`pos-hub ${args.join(" ")} failed: ${out.stderr}`);
  return out.stdout.trim();
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

interface NodeProc {
  id: number;
  client: number;
  peer: number;
  proc?: ChildProcess;
}

export class Cluster {
  readonly dir = mkdtempSync(join(tmpdir(), "pos-hub-web-"));
  private nodes: NodeProc[] = [];

  /** `open`: the nodes check no tokens (`--insecure-no-auth`, as `serve --dev`). */
  private open = false;

  /** More `serve` flags, for every start from now on. */
  extraArgs: string[] = [];

  static async start(size = 3, opts: { open?: boolean; args?: string[] } = {}): Promise<Cluster> {
    const c = new Cluster();
    c.open = opts.open ?? false;
    c.extraArgs = opts.args ?? [];
    for (let id = 1; id <= size; id++) c.nodes.push({ id, client: await freePort(), peer: await freePort() });
    run(["keygen", "--out-dir", c.dir]);
    for (const n of c.nodes) c.startNode(n.id);
    await c.waitHealthy();
    return c;
  }

  url(id: number): string {
    return `http://127.0.0.1:${this.node(id).client}`;
  }

  private node(id: number): NodeProc {
    const n = this.nodes.find((x) => x.id === id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  /** The node whose client URL is `url`. */
  idOf(url: string): number {
    const n = this.nodes.find((x) => url.endsWith(`:${x.client}`));
    if (!n) throw new Error(`no node serves ${url}`);
    return n.id;
  }

  startNode(id: number): void {
    const n = this.node(id);
    const members = this.nodes.map((m) => `${m.id}=127.0.0.1:${m.peer}/127.0.0.1:${m.client}`).join(",");
    const log = openSync(join(this.dir, `node-${id}.log`), "a");
    n.proc = spawn(
      BIN,
      [
        "serve",
        "--node-id", String(id),
        "--data-dir", join(this.dir, `node-${id}`),
        "--listen", `127.0.0.1:${n.client}`,
        "--peer-listen", `127.0.0.1:${n.peer}`,
        "--initial-cluster", members,
        "--tenant", TENANT,
        "--store", STORE,
        ...(this.open ? ["--insecure-no-auth"] : ["--public-key", join(this.dir, "store.pub.pem")]),
        "--menu", MENU,
        "--no-mdns",
        ...this.extraArgs,
      ],
      { stdio: ["ignore", log, log], env: { ...process.env, RUST_LOG: "warn,pos_hub=info" } },
    );
  }

  kill(id: number): void {
    const n = this.node(id);
    n.proc?.kill("SIGKILL");
    n.proc = undefined;
  }

  /** SIGSTOP: the node keeps its sockets open and says nothing, as a hung or frozen box. */
  pause(id: number): void {
    this.node(id).proc?.kill("SIGSTOP");
  }

  resume(id: number): void {
    this.node(id).proc?.kill("SIGCONT");
  }

  killAll(): void {
    for (const n of this.nodes) this.kill(n.id);
  }

  /** Waits until some node answers /healthz 200 (the group has a leader). */
  async waitHealthy(withinMs = 30_000): Promise<void> {
    const deadline = Date.now() + withinMs;
    while (Date.now() < deadline) {
      for (const n of this.nodes) {
        if (!n.proc) continue;
        try {
          const r = await fetch(`${this.url(n.id)}/healthz`, { signal: AbortSignal.timeout(500) });
          if (r.ok) return;
        } catch {
          // not up yet
        }
      }
      await sleep(100);
    }
    throw new Error(`no leader within ${withinMs} ms; logs in ${this.dir}`);
  }

  token(device: string, role: string, opts: { store?: string; ttl?: string } = {}): string {
    return run([
      "token", "issue",
      "--key", join(this.dir, "store.key.pem"),
      "--tenant", TENANT,
      "--store", opts.store ?? STORE,
      "--device", device,
      "--role", role,
      "--ttl", opts.ttl ?? "1d",
    ]);
  }

  /** The pairing link `token issue --pair-url` prints, for a node's page. */
  pairLink(device: string, role: string, node: number): string {
    return run([
      "token", "issue",
      "--key", join(this.dir, "store.key.pem"),
      "--tenant", TENANT,
      "--store", STORE,
      "--device", device,
      "--role", role,
      "--ttl", "1d",
      "--pair-url", this.url(node),
    ]);
  }

  /**
   * A correctly signed token that expired `agoS` seconds ago, an hour unless told (the CLI
   * will not issue one). Hubs forgive 60 s past expiry (the clock leeway).
   */
  expiredToken(device: string, role: string, agoS = 3600): string {
    const now = Math.floor(Date.now() / 1000);
    const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const input = `${enc({ alg: "EdDSA", typ: "JWT" })}.${enc({
      aud: "pos-hub",
      sub: device,
      tenantId: TENANT,
      storeId: STORE,
      role,
      exp: now - agoS,
      nbf: now - 7200,
      iat: now - 7200,
    })}`;
    // keygen writes PKCS#8 v2 (seed and public key), which Node's OpenSSL does not read:
    // rewrap the 32-byte seed as PKCS#8 v1.
    const pem = readFileSync(join(this.dir, "store.key.pem"), "utf8");
    const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""), "base64");
    const seed = der.subarray(16, 48);
    const v1 = Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]);
    const key = createPrivateKey({ key: v1, format: "der", type: "pkcs8" });
    return `${input}.${sign(null, Buffer.from(input), key).toString("base64url")}`;
  }

  /** Appends `events` (the spec's JSON shape) through `pos-hub client append`, as
   * `device` with a token of `role`; none may be refused (a batch the CLI sent again after
   * a timeout is answered DUPLICATE: in the log once). */
  appendJson(events: object[], device: string, role: string): void {
    const file = join(this.dir, `append-${Date.now()}.jsonl`);
    writeFileSync(file, events.map((e) => JSON.stringify(e)).join("\n") + "\n");
    const out = run(["client", "--hub", this.url(this.liveId()), ...this.bearer(device, role), "append", file, "--batch", "100"]);
    // `run` throws on a refusal (the command exits non-zero); its last line tallies.
    const tally = out.split("\n").pop() ?? "";
    if (!tally.startsWith(`${events.length} events:`) || !tally.endsWith(" 0 rejected")) {
      throw new Error(`pos-hub client append: ${tally}`);
    }
  }

  /** `pos-hub cluster archive-mark SEQ --retain-days DAYS`, as an admin. */
  archiveMark(seq: bigint, retainDays: number): string {
    return run([
      "cluster", "--hub", this.url(this.liveId()), ...this.bearer("e2e-admin", "admin"),
      "archive-mark", String(seq), "--retain-days", String(retainDays),
    ]);
  }

  /** `--token T` for the CLI as `device`, none when the nodes check no tokens. */
  private bearer(device: string, role: string): string[] {
    return this.open ? [] : ["--token", this.token(device, role)];
  }

  /** The first seq node `id` still holds: 1 unless retention deleted older history (then
   * Subscribe from cursor 0 is refused naming the last seq deleted). */
  async firstHeld(id: number): Promise<bigint> {
    const client = this.api(id);
    const abort = new AbortController();
    try {
      for await (const _ of client.subscribe({ cursor: 0n }, { signal: abort.signal, timeoutMs: 10_000 })) {
        return 1n;
      }
      return 1n;
    } catch (err) {
      const through = /up to seq (\d+)/.exec(String(err));
      if (!through) throw err;
      return BigInt(through[1]) + 1n;
    } finally {
      abort.abort();
    }
  }

  private liveId(): number {
    const live = this.nodes.find((n) => n.proc);
    if (!live) throw new Error("no node is running");
    return live.id;
  }

  /** Every committed event, read through the API from any live node. */
  async committed(): Promise<Event[]> {
    const client = this.api();
    // A linearizable read first: the node has then applied everything committed before
    // it, so its Hello is not behind what devices were told is committed (a follower just
    // restarted may still be catching up).
    await client.listOrders({ limit: 1, consistency: Consistency.LINEARIZABLE }, { timeoutMs: 10_000 });
    const hello = await client.hello({ deviceId: "e2e-checker" }, { timeoutMs: 5_000 });
    const events: Event[] = [];
    if (hello.lastSeq === 0n) return events;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 20_000);
    try {
      for await (const batch of client.subscribe({ cursor: 0n }, { signal: abort.signal })) {
        events.push(...batch.events);
        if (events.length > 0 && events[events.length - 1].seq >= hello.lastSeq) break;
      }
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
    return events;
  }

  async order(id: string) {
    const { order } = await this.api().getOrder(
      { orderId: id, consistency: Consistency.LINEARIZABLE },
      { timeoutMs: 10_000 },
    );
    return order;
  }

  /** A client of node `id` (the first live node unless told), as an admin device. */
  api(id = this.liveId()) {
    const token = this.open ? "" : (this.adminToken ??= this.token("e2e-admin", "admin"));
    return createClient(
      Hub,
      createGrpcWebTransport({
        baseUrl: this.url(id),
        interceptors: [
          (next) => (req) => {
            if (!this.open) req.header.set("authorization", `Bearer ${token}`);
            return next(req);
          },
        ],
      }),
    );
  }
  private adminToken?: string;

  stop(): void {
    this.killAll();
    if (!process.env.KEEP_E2E) rmSync(this.dir, { recursive: true, force: true });
  }
}
