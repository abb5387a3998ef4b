// The device's durable state in IndexedDB: pairing, known nodes, the committed read model
// with its cursor, the outbox and the refused edits. Every write that must survive a
// reload or a crash is awaited until its transaction completes.

import type { OrderView, TicketView } from "./model";

export const DB_NAME = "pos-hub";
const DB_VERSION = 1;

/** A queued edit: the event's protobuf bytes plus what the outbox needs to index it. */
export interface Queued {
  /** Queue position, assigned by IndexedDB; events are sent in this order. */
  n?: number;
  eventId: string;
  aggregateType: string;
  aggregateId: string;
  version: number;
  type: string;
  bytes: Uint8Array;
  /** Set once a hub answered ACCEPTED/DUPLICATE: kept (and applied) until the
   * committed stream reaches this seq, so the screen never flickers back. */
  ackedSeq?: number;
}

/** An edit the hub refused: rolled back and shown to the cashier until dismissed. */
export interface Refused {
  n?: number;
  eventId: string;
  type: string;
  aggregateId: string;
  code: string;
  message: string;
  at: number;
}

export interface Pairing {
  token: string;
  deviceId: string;
  role: string;
  tenantId: string;
  storeId: string;
  /** The hub runs without tokens (`serve --dev`): no authorization header is sent. */
  open: boolean;
}

type Store = "meta" | "outbox" | "refused" | "orders" | "tickets";

export class Db {
  private constructor(private readonly db: IDBDatabase) {}

  static open(name = DB_NAME): Promise<Db> {
    return new Promise((resolve, reject) => {
      const req = indexedDB.open(name, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        db.createObjectStore("meta");
        db.createObjectStore("outbox", { keyPath: "n", autoIncrement: true });
        db.createObjectStore("refused", { keyPath: "n", autoIncrement: true });
        db.createObjectStore("orders", { keyPath: "id" });
        db.createObjectStore("tickets", { keyPath: "key" });
      };
      req.onsuccess = () => resolve(new Db(req.result));
      req.onerror = () => reject(req.error ?? new Error("IndexedDB would not open"));
      req.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
    });
  }

  /** Runs `work` in one transaction and resolves once it has committed. */
  tx<T>(stores: Store[], mode: IDBTransactionMode, work: (t: IDBTransaction) => T): Promise<T> {
    return new Promise((resolve, reject) => {
      const t = this.db.transaction(stores, mode, { durability: "strict" });
      let result: T;
      t.oncomplete = () => resolve(result);
      t.onerror = () => reject(t.error ?? new Error("IndexedDB transaction failed"));
      t.onabort = () => reject(t.error ?? new Error("IndexedDB transaction aborted"));
      result = work(t);
    });
  }

  get<T>(store: Store, key: IDBValidKey): Promise<T | undefined> {
    return this.read<T | undefined>(store, (s) => s.get(key));
  }

  all<T>(store: Store): Promise<T[]> {
    return this.read<T[]>(store, (s) => s.getAll());
  }

  private read<T>(store: Store, op: (s: IDBObjectStore) => IDBRequest): Promise<T> {
    return new Promise((resolve, reject) => {
      const req = op(this.db.transaction(store, "readonly").objectStore(store));
      req.onsuccess = () => resolve(req.result as T);
      req.onerror = () => reject(req.error ?? new Error(`reading ${store} failed`));
    });
  }

  putMeta(key: string, value: unknown): Promise<void> {
    return this.tx(["meta"], "readwrite", (t) => {
      t.objectStore("meta").put(value, key);
    });
  }

  /** Queues an event; resolves with its queue number once it is on disk. */
  enqueue(entry: Queued, lamport: number): Promise<number> {
    return this.tx(["outbox", "meta"], "readwrite", (t) => {
      const box: { n: number } = { n: 0 };
      const req = t.objectStore("outbox").add(entry);
      req.onsuccess = () => {
        box.n = req.result as number;
      };
      t.objectStore("meta").put(lamport, "lamport");
      return box;
    }).then((box) => box.n);
  }

  /** Records a hub's answers: acked events keep their place, refused ones move to the
   * refused list, dropped ones (refused lock attempts) just leave. */
  settle(
    acked: Queued[],
    refused: { entry: Queued; code: string; message: string }[],
    dropped: number[],
  ): Promise<void> {
    return this.tx(["outbox", "refused"], "readwrite", (t) => {
      const outbox = t.objectStore("outbox");
      for (const entry of acked) outbox.put(entry);
      for (const n of dropped) outbox.delete(n);
      for (const r of refused) {
        if (r.entry.n !== undefined) outbox.delete(r.entry.n);
        const letter: Refused = {
          eventId: r.entry.eventId,
          type: r.entry.type,
          aggregateId: r.entry.aggregateId,
          code: r.code,
          message: r.message,
          at: Date.now(),
        };
        t.objectStore("refused").add(letter);
      }
    });
  }

  /** Stores a committed batch: changed orders and tickets, the cursor and the outbox
   * entries the batch settled, all in one transaction. */
  commit(cursor: number, orders: OrderView[], tickets: TicketView[], settled: number[]): Promise<void> {
    return this.tx(["meta", "orders", "tickets", "outbox"], "readwrite", (t) => {
      for (const o of orders) t.objectStore("orders").put(o);
      for (const k of tickets) t.objectStore("tickets").put(k);
      for (const n of settled) t.objectStore("outbox").delete(n);
      t.objectStore("meta").put(cursor, "cursor");
    });
  }

  /** Replaces the committed copy with a hub's live state as of `cursor` (Bootstrap), and
   * drops the outbox entries it settled, in one transaction. */
  replaceModel(cursor: number, orders: OrderView[], tickets: TicketView[], settled: number[]): Promise<void> {
    return this.tx(["meta", "orders", "tickets", "outbox"], "readwrite", (t) => {
      t.objectStore("orders").clear();
      t.objectStore("tickets").clear();
      for (const o of orders) t.objectStore("orders").put(o);
      for (const k of tickets) t.objectStore("tickets").put(k);
      for (const n of settled) t.objectStore("outbox").delete(n);
      t.objectStore("meta").put(cursor, "cursor");
    });
  }

  /** Forgets the committed copy (the hub's log was reset): the outbox stays. */
  resetModel(): Promise<void> {
    return this.tx(["meta", "orders", "tickets"], "readwrite", (t) => {
      t.objectStore("orders").clear();
      t.objectStore("tickets").clear();
      t.objectStore("meta").put(0, "cursor");
    });
  }

  dismiss(n: number): Promise<void> {
    return this.tx(["refused"], "readwrite", (t) => {
      t.objectStore("refused").delete(n);
    });
  }

  /** Unpairs the device: the token goes; the committed copy and queued edits stay (edits
   * queued as another device are refused by the hub once sent, and listed). */
  unpair(): Promise<void> {
    return this.tx(["meta"], "readwrite", (t) => {
      t.objectStore("meta").delete("pairing");
    });
  }
}
