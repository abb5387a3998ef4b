// The browser device, local-first like the Rust SDK (src/client/device.rs): an edit is
// folded into the optimistic view and written to the IndexedDB outbox before anything
// is sent; a send loop delivers the outbox in order with its original eventIds (a resend
// is answered DUPLICATE, never applied twice); a subscribe loop follows the committed
// log from the persisted cursor and replaces the optimistic state with the hub's truth.

import { Code, ConnectError } from "@connectrpc/connect";
import { create, fromBinary, toBinary, type JsonObject } from "@bufbuild/protobuf";
import { EventSchema, type Event } from "./gen/pos/v1/events_pb";
import { AppendStatus, type BootstrapResponse, GetMenuResponseSchema, type GetMenuResponse, type HelloResponse, type NodeInfo } from "./gen/pos/v1/hub_pb";
import { Db, type Pairing, type Queued, type Refused } from "./db";
import { AuthError, CALL_DEADLINE_MAX_MS, HubLink, OfflineError, authErrorOf, describe } from "./hub";
import { Model, factOf, orderFromHub, ticketFromHub, type Fact, type OrderView, type TicketView } from "./model";
import { uuidv7 } from "./uuid";

/** Events per Append. */
const SEND_BATCH_MAX = 100;
/** Retry delays after a round in which no node answered: from the first, doubling, to
 * the cap (a till should notice a hub coming back within a couple of seconds). */
const RETRY_FIRST_MS = 200;
const RETRY_MAX_MS = 2_000;
/** How often the stream's progress is checked, and how long it may stay behind the
 * device's own acknowledged events before it is moved to another node (see `watch`). */
const WATCH_EVERY_MS = 1_000;
const SUBSCRIPTION_STALL_MS = 3_000;
/** A stream with no message at all for this long, not even the heartbeat the hub sends
 * every second when there is nothing else (`wire::SUBSCRIBE_SILENCE_MS`), is dead: a
 * paused node, a link gone without closing. The page moves to the next node at once. */
export const STREAM_SILENCE_MS = 2_000;

export type Phase = "starting" | "online" | "reconnecting" | "offline";

export interface Draft {
  aggregateType: "order" | "kds" | "bds";
  aggregateId: string;
  type: string;
  payload: JsonObject;
}

export interface Status {
  phase: Phase;
  /** The node the device talks to. */
  node: string;
  /** Edits not answered by a hub yet (lock bookkeeping is not counted: it is not the
   * cashier's work). */
  queued: number;
  /** Every queued event not yet seen in the committed stream. */
  pending: number;
  cursor: number;
  leaderId: number;
  nodes: NodeInfo[];
  refused: Refused[];
  /** Set when the hub refused the token: the app shows its error screen. */
  authError?: { code: string; message: string };
  lastError?: string;
}

export class Device {
  readonly committed = new Model();
  /** Committed state with the queued edits folded on top: what the screens show. */
  view = new Model();
  private outbox: Queued[] = [];
  private refused: Refused[] = [];
  private cursor = 0;
  private lamport = 0;
  /** The store's clock as the hub last reported it (Hello): re-stamps start past it. */
  private storeClock = 0;
  private hubOffsetMs = 0;
  private leaderId = 0;
  private nodes: NodeInfo[] = [];
  private phase: Phase = "starting";
  private authError?: { code: string; message: string };
  private lastError?: string;
  private listeners = new Set<() => void>();
  private wakeSender: () => void = () => {};
  private running = true;
  private stream?: AbortController;
  private appendChain: Promise<unknown> = Promise.resolve();
  /** Subscribe said the cursor is below the store's retention: bootstrap first. */
  private belowRetention = false;
  menu?: GetMenuResponse;

  private constructor(
    private readonly db: Db,
    readonly pairing: Pairing,
    readonly link: HubLink,
  ) {}

  /** Loads the device's state from IndexedDB and starts its loops. */
  static async start(db: Db, pairing: Pairing): Promise<Device> {
    const seeds = (await db.get<string[]>("meta", "nodes")) ?? [];
    const link = new HubLink([location.origin, ...seeds], pairing.open ? null : pairing.token);
    const device = new Device(db, pairing, link);
    link.onSwitch = () => {
      if (device.phase === "online") device.setPhase("reconnecting");
      device.stream?.abort();
    };
    device.cursor = (await db.get<number>("meta", "cursor")) ?? 0;
    // A clock stored by an older app from a hub without the bound may not be exact.
    const stored = (await db.get<number>("meta", "lamport")) ?? 0;
    device.lamport = Number.isSafeInteger(stored) ? stored : 0;
    for (const o of await db.all<OrderView>("orders")) device.committed.orders.set(o.id, o);
    for (const t of await db.all<TicketView>("tickets")) device.committed.tickets.set(t.key, t);
    device.outbox = await db.all<Queued>("outbox");
    device.refused = await db.all<Refused>("refused");
    const menu = await db.get<Uint8Array>("meta", "menu");
    if (menu) device.menu = decodeMenu(menu);
    device.rebuildView();
    void device.sendLoop();
    void device.subscribeLoop();
    void device.watch();
    return device;
  }

  stop(): void {
    this.running = false;
    this.stream?.abort();
    this.wakeSender();
  }

  get deviceId(): string {
    return this.pairing.deviceId;
  }

  /** Hub time now, as far as this device can tell (ms since the Unix epoch). */
  hubNow(): number {
    return Date.now() + this.hubOffsetMs;
  }

  status(): Status {
    return {
      phase: this.phase,
      node: this.link.node,
      queued: this.outbox.filter((e) => e.ackedSeq === undefined && !e.type.startsWith("order.lock")).length,
      pending: this.outbox.length,
      cursor: this.cursor,
      leaderId: this.leaderId,
      nodes: this.nodes,
      refused: this.refused,
      authError: this.authError,
      lastError: this.lastError,
    };
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private notify(): void {
    for (const l of this.listeners) l();
  }

  private setPhase(phase: Phase): void {
    if (this.phase !== phase) {
      this.phase = phase;
      this.notify();
    }
  }

  /** Applies edits locally and queues them durably, in order; they are sent afterwards.
   * Each event's version follows the optimistic view, so queued edits chain. */
  append(drafts: Draft[]): Promise<void> {
    const run = this.appendChain.then(() => this.appendNow(drafts));
    this.appendChain = run.catch(() => undefined);
    return run;
  }

  private async appendNow(drafts: Draft[]): Promise<void> {
    for (const d of drafts) {
      const version = d.type.endsWith(".created") ? 1 : this.versionOf(d) + 1;
      this.lamport += 1;
      const event = create(EventSchema, {
        eventId: uuidv7(),
        tenantId: this.pairing.tenantId,
        storeId: this.pairing.storeId,
        aggregateType: d.aggregateType,
        aggregateId: d.aggregateId,
        version: BigInt(version),
        type: d.type,
        at: new Date().toISOString(),
        actor: { deviceId: this.deviceId, userId: "" },
        clock: { lamport: BigInt(this.lamport), deviceId: this.deviceId },
        payload: d.payload,
      });
      const entry: Queued = {
        eventId: event.eventId,
        aggregateType: d.aggregateType,
        aggregateId: d.aggregateId,
        version,
        type: d.type,
        bytes: toBinary(EventSchema, event),
      };
      entry.n = await this.db.enqueue(entry, this.lamport);
      this.outbox.push(entry);
      this.view.apply(factOf(event));
    }
    this.notify();
    this.wakeSender();
  }

  private versionOf(d: Draft): number {
    if (d.aggregateType === "order") return this.view.orders.get(d.aggregateId)?.version ?? 0;
    return this.view.tickets.get(`${d.aggregateType}:${d.aggregateId}`)?.version ?? 0;
  }

  async dismiss(n: number | undefined): Promise<void> {
    if (n === undefined) return;
    await this.db.dismiss(n);
    this.refused = this.refused.filter((r) => r.n !== n);
    this.notify();
  }

  private rebuildView(): void {
    const view = this.committed.clone();
    for (const entry of this.outbox) view.apply(factOf(fromBinary(EventSchema, entry.bytes)));
    this.view = view;
  }

  // ---- sending ----

  private async sendLoop(): Promise<void> {
    let delay = RETRY_FIRST_MS;
    while (this.running) {
      const batch = this.outbox.filter((e) => e.ackedSeq === undefined).slice(0, SEND_BATCH_MAX);
      if (batch.length === 0 || this.authError) {
        await new Promise<void>((wake) => {
          this.wakeSender = wake;
        });
        continue;
      }
      try {
        const events = batch.map((e) => fromBinary(EventSchema, e.bytes));
        const answer = await this.link.call((c, timeoutMs) => c.append({ events }, { timeoutMs }));
        await this.record(batch, answer.results);
        delay = RETRY_FIRST_MS;
        this.lastError = undefined;
        if (this.phase !== "online") this.setPhase("online");
      } catch (err) {
        if (err instanceof AuthError && err.code === Code.PermissionDenied) {
          // The hub refused the whole request for what it contains (e.g. a role that may
          // not write these events): nothing was written, and resending cannot help.
          await this.refuse(batch.map((entry) => ({ entry, code: "PERMISSION_DENIED", message: err.message })));
          continue;
        }
        this.failed(err);
        await sleep(jitter(delay));
        delay = Math.min(RETRY_MAX_MS, delay * 2);
      }
    }
  }

  private failed(err: unknown): void {
    const auth = err instanceof AuthError ? err : authErrorOf(err);
    if (auth) {
      this.authError = { code: Code[auth.code], message: auth.message };
      this.notify();
      return;
    }
    this.lastError = describe(err);
    this.setPhase(err instanceof OfflineError ? "offline" : "reconnecting");
    this.notify();
  }

  private async record(
    batch: Queued[],
    results: { eventId: string; status: AppendStatus; seq: bigint; code: string; message: string }[],
  ): Promise<void> {
    const acked: Queued[] = [];
    const refused: { entry: Queued; code: string; message: string }[] = [];
    const restamp: Queued[] = [];
    batch.forEach((entry, i) => {
      const r = results[i];
      if (!r || r.eventId !== entry.eventId) {
        refused.push({ entry, code: "NO_ANSWER", message: "the hub's answer did not name this event" });
      } else if (r.status === AppendStatus.ACCEPTED || r.status === AppendStatus.DUPLICATE) {
        acked.push({ ...entry, ackedSeq: Number(r.seq) });
      } else if (r.code === "CLOCK_OUT_OF_RANGE" && stampOf(entry) > BigInt(this.storeClock + 1)) {
        // This device's clock ran ahead of the store's (or the store was reset): the
        // event is fine, its stamp is not. Re-stamped once; refused again, it is refused.
        restamp.push(entry);
      } else {
        refused.push({ entry, code: r.code, message: r.message });
      }
    });
    if (restamp.length) await this.restamp(restamp);
    // Still queued (not settled by the committed stream meanwhile)?
    const live = new Set(this.outbox.map((e) => e.n));
    const stillAcked = acked.filter((e) => live.has(e.n));
    await this.db.settle(stillAcked, [], []);
    for (const e of stillAcked) {
      const mine = this.outbox.find((x) => x.n === e.n);
      if (mine) mine.ackedSeq = e.ackedSeq;
    }
    if (refused.length) await this.refuse(refused);
    // An acked event at or below the cursor was committed before (a resend after a
    // reload): nothing more will come for it on the stream.
    await this.settleBelowCursor();
    this.notify();
  }

  /** Gives `entries` clocks just past the store's and moves this device's clock there. */
  private async restamp(entries: Queued[]): Promise<void> {
    const live = new Set(this.outbox.map((e) => e.n));
    let lamport = this.storeClock;
    const updated = entries
      .filter((e) => live.has(e.n))
      .map((entry) => {
        const event = fromBinary(EventSchema, entry.bytes);
        lamport += 1;
        if (event.clock) event.clock.lamport = BigInt(lamport);
        return { ...entry, bytes: toBinary(EventSchema, event) };
      });
    await this.db.settle(updated, [], []);
    await this.db.putMeta("lamport", lamport);
    this.lamport = lamport;
    for (const u of updated) {
      const i = this.outbox.findIndex((e) => e.n === u.n);
      if (i >= 0) this.outbox[i] = u;
    }
  }

  private async refuse(refused: { entry: Queued; code: string; message: string }[]): Promise<void> {
    // A refused lock attempt is not the cashier's error: the screen shows who holds it.
    const isLock = (r: { entry: Queued }) => r.entry.type.startsWith("order.lock");
    const quiet = refused.filter(isLock).map((r) => r.entry.n ?? -1);
    await this.db.settle([], refused.filter((r) => !isLock(r)), quiet);
    const gone = new Set(refused.map((r) => r.entry.n));
    this.outbox = this.outbox.filter((e) => !gone.has(e.n));
    this.refused = await this.db.all<Refused>("refused");
    this.rebuildView();
    this.notify();
  }

  private async settleBelowCursor(): Promise<void> {
    const done = this.outbox.filter((e) => e.ackedSeq !== undefined && e.ackedSeq <= this.cursor);
    if (!done.length) return;
    await this.db.commit(this.cursor, [], [], done.map((e) => e.n ?? -1));
    const gone = new Set(done.map((e) => e.n));
    this.outbox = this.outbox.filter((e) => !gone.has(e.n));
    this.rebuildView();
  }

  // ---- following the committed log ----

  private async subscribeLoop(): Promise<void> {
    let delay = RETRY_FIRST_MS;
    while (this.running) {
      if (this.authError) {
        await sleep(1_000);
        continue;
      }
      let silent = false;
      try {
        const hello = await this.link.call((c, timeoutMs) =>
          c.hello({ deviceId: this.deviceId, cursor: BigInt(this.cursor) }, { timeoutMs }),
        );
        await this.greeted(hello);
        const url = this.link.node;
        // Nothing committed here yet, or a cursor the store's retention passed: start from
        // the live state at one seq instead of replaying the history.
        if (this.cursor === 0 || this.belowRetention) await this.bootstrap(url);
        const abort = new AbortController();
        this.stream = abort;
        const stream = this.link.client(url).subscribe({ cursor: BigInt(this.cursor) }, { signal: abort.signal });
        this.setPhase("online");
        delay = RETRY_FIRST_MS;
        // Any message, a heartbeat included, shows the node is alive.
        let lastMessage = Date.now();
        const silence = setInterval(() => {
          if (Date.now() - lastMessage < STREAM_SILENCE_MS || abort.signal.aborted) return;
          silent = true;
          this.lastError = `the stream from ${url} fell silent`;
          abort.abort();
        }, STREAM_SILENCE_MS / 8);
        try {
          for await (const batch of stream) {
            lastMessage = Date.now();
            // A heartbeat carries no events: it moves no cursor and is never a gap.
            if (batch.events.length > 0) await this.committedBatch(batch.events);
          }
        } finally {
          clearInterval(silence);
        }
        // The node closed the stream (it is stopping): follow another one.
        this.link.rotate();
      } catch (err) {
        if (!this.running) return;
        if (isBelowRetention(err)) {
          // The hub deleted (archived) the events after this cursor: bootstrap, at once.
          this.belowRetention = true;
          this.lastError = describe(err);
          continue;
        }
        if (err instanceof OfflineError || authErrorOf(err) || err instanceof AuthError) {
          this.failed(err);
        } else if (silent) {
          // Silent: the next node at once, no backoff.
          this.link.rotate();
          continue;
        } else {
          // The stream broke (node died or was switched away from): try the next node.
          this.lastError = describe(err);
          if (!this.stream?.signal.aborted) this.link.rotate();
        }
        await sleep(jitter(delay));
        delay = Math.min(RETRY_MAX_MS, delay * 2);
      }
    }
  }

  /** Replaces the committed copy with `url`'s live state (Bootstrap) and settles the
   * queued edits the hub answered at or below its seq; never with a state older than the
   * page's copy. A hub without Bootstrap (an older
   * release) leaves the copy as it is: the page follows its log from the cursor. */
  private async bootstrap(url: string): Promise<void> {
    let seq: number | undefined;
    let lamport = 0;
    let complete = false;
    const orders: OrderView[] = [];
    let pages: BootstrapResponse[];
    try {
      pages = await this.bootstrapPages(url);
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.Unimplemented) return;
      throw err;
    }
    for (const page of pages) {
      if (seq === undefined) {
        seq = Number(page.seq);
        lamport = clockOf(page.lamport);
      } else if (Number(page.seq) !== seq) {
        throw new Error(`${url}: bootstrap pages name seqs ${seq} and ${page.seq}`);
      }
      // A node just back from days off may be behind this page's copy: never go back in
      // time; the loop tries another node.
      if (seq < this.cursor) {
        throw new Error(`${url} is behind this page: its live state is at seq ${seq}, this page holds seq ${this.cursor}`);
      }
      for (const o of page.orders) {
        const view = orderFromHub(o);
        if (view) orders.push(view);
      }
      complete ||= page.last;
    }
    if (seq === undefined || !complete) throw new Error(`${url}: the bootstrap stream ended before its last page`);
    const byId = new Map(orders.map((o) => [o.id, o]));
    const tickets = pages.flatMap((p) => p.tickets).flatMap((t) => ticketFromHub(t, byId) ?? []);
    const upTo = seq;
    const settled = this.outbox.filter((e) => e.ackedSeq !== undefined && e.ackedSeq <= upTo);
    await this.db.replaceModel(seq, orders, tickets, settled.map((e) => e.n ?? -1));
    this.committed.orders = byId;
    this.committed.tickets = new Map(tickets.map((t) => [t.key, t]));
    this.cursor = seq;
    this.lamport = Math.max(this.lamport, lamport);
    this.belowRetention = false;
    const gone = new Set(settled.map((e) => e.n));
    this.outbox = this.outbox.filter((e) => !gone.has(e.n));
    this.rebuildView();
    this.notify();
  }

  /** Every page of `url`'s Bootstrap stream, up to the last one. */
  private async bootstrapPages(url: string): Promise<BootstrapResponse[]> {
    const pages: BootstrapResponse[] = [];
    const stream = this.link.client(url).bootstrap({}, { timeoutMs: CALL_DEADLINE_MAX_MS });
    for await (const page of stream) {
      pages.push(page);
      if (page.last) break;
    }
    return pages;
  }

  private async greeted(hello: HelloResponse): Promise<void> {
    this.link.learn(hello);
    this.nodes = hello.nodes;
    this.leaderId = Number(hello.leaderId);
    this.hubOffsetMs = Number(hello.hubTime) - Date.now();
    this.storeClock = clockOf(hello.lamport);
    this.lamport = Math.max(this.lamport, this.storeClock);
    await this.db.putMeta("nodes", this.link.known);
    if (hello.snapshotNeeded) {
      // The hub's log is not the one this copy followed (the store was reset): start
      // over from 0. Queued edits stay and are sent; the hub judges them.
      await this.db.resetModel();
      this.committed.orders.clear();
      this.committed.tickets.clear();
      this.cursor = 0;
      this.rebuildView();
    }
    if (!this.menu || this.menu.items.length === 0) await this.loadMenu();
    this.notify();
  }

  private async loadMenu(): Promise<void> {
    try {
      const menu = await this.link.client().getMenu({}, { timeoutMs: CALL_DEADLINE_MAX_MS });
      this.menu = menu;
      await this.db.putMeta("menu", encodeMenu(menu));
    } catch (err) {
      this.lastError = `menu: ${describe(err)}`;
    }
  }

  private async committedBatch(events: Event[]): Promise<void> {
    const orders = new Set<string>();
    const tickets = new Set<string>();
    const seen = new Set<string>();
    for (const e of events) {
      const fact: Fact = factOf(e);
      if (fact.seq <= this.cursor) continue;
      // A redaction marker (a kitchen screen's order.paid) is folded like any event and
      // moves the cursor to its seq: a screen's filtered stream is never a gap.
      const changed = this.committed.apply(fact);
      if (changed.order) orders.add(changed.order);
      if (changed.ticket) tickets.add(changed.ticket);
      this.cursor = fact.seq;
      this.lamport = Math.max(this.lamport, clockOf(e.clock?.lamport));
      seen.add(fact.eventId);
    }
    const settled = this.outbox.filter(
      (e) => seen.has(e.eventId) || (e.ackedSeq !== undefined && e.ackedSeq <= this.cursor),
    );
    await this.db.commit(
      this.cursor,
      [...orders].flatMap((id) => this.committed.orders.get(id) ?? []),
      [...tickets].flatMap((k) => this.committed.tickets.get(k) ?? []),
      settled.map((e) => e.n ?? -1),
    );
    const gone = new Set(settled.map((e) => e.n));
    this.outbox = this.outbox.filter((e) => !gone.has(e.n));
    this.rebuildView();
    this.notify();
  }

  /** Checks, once a second, that the stream keeps up with this device's own writes: a
   * stream on a node cut off from the leader still gets heartbeats but brings nothing
   * new. The stream is moved to the next node when the hub has acknowledged events of
   * this device it does not bring for longer than SUBSCRIPTION_STALL_MS. (A dead stream
   * is found by its silence, in `subscribeLoop`, without asking the hub.) */
  private async watch(): Promise<void> {
    let behindSince = 0;
    while (this.running) {
      await sleep(WATCH_EVERY_MS);
      if (this.authError || this.phase !== "online") {
        behindSince = 0;
        continue;
      }
      const behind = this.outbox.some((e) => e.ackedSeq !== undefined && e.ackedSeq > this.cursor);
      if (!behind) {
        behindSince = 0;
      } else if (behindSince === 0) {
        behindSince = Date.now();
      } else if (Date.now() - behindSince > SUBSCRIPTION_STALL_MS) {
        behindSince = 0;
        this.lastError = `the stream from ${this.link.node} stopped keeping up`;
        this.stream?.abort();
        this.link.rotate();
      }
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Between half and all of `ms`, so devices that lost the same node do not retry in step. */
function jitter(ms: number): number {
  return ms / 2 + Math.random() * (ms / 2);
}

function encodeMenu(menu: GetMenuResponse): Uint8Array {
  return toBinary(GetMenuResponseSchema, menu);
}

function decodeMenu(bytes: Uint8Array): GetMenuResponse {
  return fromBinary(GetMenuResponseSchema, bytes);
}

/** The hub's bound on Lamport clocks (rules V2): 2^53 - 1, what a JavaScript number holds
 * exactly. A clock above it (accepted before the bound) never moves this device's clock. */
const LAMPORT_MAX = BigInt(Number.MAX_SAFE_INTEGER);

function clockOf(lamport: bigint | undefined): number {
  const l = lamport ?? 0n;
  return l <= LAMPORT_MAX ? Number(l) : 0;
}

/** The clock a queued event was stamped with, exactly. */
function stampOf(entry: Queued): bigint {
  return fromBinary(EventSchema, entry.bytes).clock?.lamport ?? 0n;
}

/** Subscribe's answer to a cursor the store's retention passed (`wire::CURSOR_BELOW_RETENTION`). */
function isBelowRetention(err: unknown): boolean {
  return err instanceof ConnectError && err.code === Code.OutOfRange && err.rawMessage.startsWith("CURSOR_BELOW_RETENTION");
}
