// How the page reaches the hub: gRPC-web calls to one node at a time, moving to the next
// known node when a node does not answer. The list of nodes comes from Hello and is kept
// in IndexedDB, so a page whose own node died still knows where the others are.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Hub, type HelloResponse } from "./gen/pos/v1/hub_pb";

export type HubClient = Client<typeof Hub>;

/** The hub refused the device's token: nothing to retry until the device is paired again. */
export class AuthError extends Error {
  constructor(
    readonly code: Code,
    message: string,
  ) {
    super(message);
  }
}

/** No known node answered. */
export class OfflineError extends Error {}

/** How long one node may take to answer one call before the next node is tried, in the
 * same call: `wire::CALL_DEADLINE_MS`, the deadline of a device that cannot ping (the
 * Rust SDK pings and waits longer), sized from the group's default election timeout. A
 * dead leader is replaced in about 4 × 200 ms; a call to a healthy node made as it died
 * usually answers within this, and a paused or cut-off node costs the page no more. */
export const CALL_DEADLINE_MS = 1_000;
/** The longest the deadline grows to while every node answers too slowly (a busy hub, a
 * big batch): the hub's own append timeout (5 s) plus the trip. */
export const CALL_DEADLINE_MAX_MS = 8_000;

/** Whether an error says the node is unusable (so another node should be tried), as
 * opposed to an answer about the request itself. */
export function isNodeFailure(err: unknown): boolean {
  if (!(err instanceof ConnectError)) return true;
  switch (err.code) {
    case Code.Unavailable:
    case Code.Unknown:
    case Code.DeadlineExceeded:
    case Code.Internal:
    case Code.Aborted:
    case Code.Canceled:
    case Code.ResourceExhausted:
    case Code.Unimplemented:
      return true;
    default:
      return false;
  }
}

export function authErrorOf(err: unknown): AuthError | undefined {
  if (err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied)) {
    return new AuthError(err.code, err.rawMessage);
  }
  return undefined;
}

/** `http://127.0.0.1:5101` for a node's client address, in the page's own scheme. */
export function nodeUrl(clientAddr: string, scheme = location.protocol): string {
  if (/^https?:\/\//.test(clientAddr)) return clientAddr.replace(/\/$/, "");
  return `${scheme}//${clientAddr}`;
}

export class HubLink {
  private readonly clients = new Map<string, HubClient>();
  private nodes: string[];
  private current = 0;
  /** The deadline of one call to one node now: `CALL_DEADLINE_MS`, doubled after a round
   * in which every node timed out, back to it after an answer. */
  private deadlineMs = CALL_DEADLINE_MS;
  /** Called when the node in use changes or fails over. */
  onSwitch: (from: string, to: string) => void = () => {};

  constructor(
    seeds: string[],
    private readonly token: string | null,
  ) {
    this.nodes = dedupe(seeds);
  }

  get node(): string {
    return this.nodes[this.current] ?? "";
  }

  get known(): string[] {
    return [...this.nodes];
  }

  client(url = this.node): HubClient {
    let client = this.clients.get(url);
    if (!client) {
      const token = this.token;
      const auth: Interceptor = (next) => (req) => {
        if (token) req.header.set("authorization", `Bearer ${token}`);
        return next(req);
      };
      client = createClient(Hub, createGrpcWebTransport({ baseUrl: url, interceptors: [auth] }));
      this.clients.set(url, client);
    }
    return client;
  }

  /** Adds the nodes a Hello names; the node in use stays in use. */
  learn(hello: HelloResponse): void {
    const inUse = this.node;
    const named = hello.nodes.map((n) => nodeUrl(n.clientAddr));
    this.nodes = dedupe([inUse, ...named, ...this.nodes].filter(Boolean));
    this.current = 0;
  }

  /** Moves to the next known node. */
  rotate(): void {
    if (this.nodes.length < 2) return;
    const from = this.node;
    this.current = (this.current + 1) % this.nodes.length;
    this.onSwitch(from, this.node);
  }

  /** Runs `call` against the node in use, then at once each other node, until one
   * answers; each gets `timeoutMs` (pass it to the call). An answer that is about the
   * request (not the node) is thrown as is. */
  async call<T>(call: (client: HubClient, timeoutMs: number) => Promise<T>): Promise<T> {
    let last: unknown;
    let allTimedOut = true;
    const timeoutMs = this.deadlineMs;
    for (let tried = 0; tried < Math.max(1, this.nodes.length); tried++) {
      const url = this.node;
      try {
        const answer = await call(this.client(url), timeoutMs);
        this.deadlineMs = CALL_DEADLINE_MS;
        return answer;
      } catch (err) {
        const auth = authErrorOf(err);
        if (auth) throw auth;
        if (!isNodeFailure(err)) throw err;
        if (!(err instanceof ConnectError && err.code === Code.DeadlineExceeded)) allTimedOut = false;
        last = err;
        this.rotate();
      }
    }
    if (allTimedOut) this.deadlineMs = Math.min(CALL_DEADLINE_MAX_MS, timeoutMs * 2);
    throw new OfflineError(`no hub answered (${describe(last)})`);
  }
}

export function describe(err: unknown): string {
  if (err instanceof ConnectError) return `${Code[err.code]}: ${err.rawMessage}`;
  if (err instanceof Error) return err.message;
  return String(err);
}

function dedupe(urls: string[]): string[] {
  return [...new Set(urls)];
}
