// The device's read model: orders and KDS/BDS tickets, folded from events.
//
// Committed events (from Subscribe) were already checked by the hub's rules, so folding
// them only records their effect. Queued events are folded on top of a copy of the
// committed model for the optimistic view; when the hub refuses one, it is simply no
// longer folded, which rolls it back.
//
// A kitchen or bar screen's stream carries order.paid as a redaction marker (`redacted`
// set, payload emptied, seq kept): folded like any other event, the order turns paid with
// no payments, and the cursor moves past it as it does past every seq.

import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import type { Event } from "./gen/pos/v1/events_pb";
import {
  OrderStatus as PbOrderStatus,
  TicketKind as PbTicketKind,
  TicketStatus as PbTicketStatus,
  type Order as PbOrder,
  type Ticket as PbTicket,
} from "./gen/pos/v1/hub_pb";

export type OrderStatus = "active" | "parked" | "paid" | "cancelled";
export type TicketKind = "kds" | "bds";
export type TicketStatus = "created" | "acked" | "done";

export interface Modifier {
  id: string;
  name: string;
  price: number;
}

export interface LineItem {
  id: string;
  sku: string;
  name: string;
  unitPrice: number;
  quantity: number;
  category: string;
  modifiers: Modifier[];
}

export interface Payment {
  method: string;
  amount: number;
}

export interface LockView {
  holder: string;
  userId: string;
  /** Hub time (ms) at which the lock lapses; 0 while only queued here. */
  expiresAt: number;
}

export interface OrderView {
  id: string;
  status: OrderStatus;
  tableNumber: string;
  guestCount: number;
  currency: string;
  items: LineItem[];
  total: number;
  payments: Payment[];
  version: number;
  lock?: LockView;
  tickets: { kind: TicketKind; id: string; status: TicketStatus }[];
  /** Hub time of creation and of the last change (ms; 0 while only queued). */
  createdAt: number;
  updatedAt: number;
  createdBy: string;
}

export interface TicketView {
  /** `kind:id`, the IndexedDB key. */
  key: string;
  kind: TicketKind;
  id: string;
  orderId: string;
  station: string;
  tableNumber: string;
  items: { sku: string; name: string; quantity: number; notes: string }[];
  status: TicketStatus;
  version: number;
  createdAt: number;
  doneAt: number;
}

/** What folding needs of an event, with numbers instead of the wire's bigints. */
export interface Fact {
  eventId: string;
  aggregateType: string;
  aggregateId: string;
  version: number;
  type: string;
  deviceId: string;
  userId: string;
  payload: JsonObject;
  /** Leader-stamped time; 0 for an event not committed yet. */
  hubTime: number;
  seq: number;
  /** The hub removed the payload's payment details (kitchen and bar screens). */
  redacted: boolean;
}

export function factOf(e: Event): Fact {
  return {
    eventId: e.eventId,
    aggregateType: e.aggregateType,
    aggregateId: e.aggregateId,
    version: Number(e.version),
    type: e.type,
    deviceId: e.actor?.deviceId ?? "",
    userId: e.actor?.userId ?? "",
    payload: e.payload ?? {},
    hubTime: Number(e.hubTime),
    seq: Number(e.seq),
    redacted: e.redacted,
  };
}

/** The hub's bounds on a lock's lease (src/domain/lock.rs). */
export const LOCK_TTL_MS_MIN = 30_000;
export const LOCK_TTL_MS_MAX = 60_000;
export const LOCK_TTL_MS_DEFAULT = 45_000;

function clampTtl(requested: number | undefined): number {
  const ttl = requested ?? LOCK_TTL_MS_DEFAULT;
  return Math.min(LOCK_TTL_MS_MAX, Math.max(LOCK_TTL_MS_MIN, ttl));
}

export const ticketKey = (kind: TicketKind, id: string): string => `${kind}:${id}`;

export class Model {
  orders = new Map<string, OrderView>();
  tickets = new Map<string, TicketView>();

  clone(): Model {
    const copy = new Model();
    for (const [k, o] of this.orders) copy.orders.set(k, structuredClone(o));
    for (const [k, t] of this.tickets) copy.tickets.set(k, structuredClone(t));
    return copy;
  }

  /** Folds one event; returns the keys it changed (for persisting only those). */
  apply(f: Fact): { order?: string; ticket?: string } {
    const p = f.payload;
    if (f.aggregateType === "order") {
      const order = this.orders.get(f.aggregateId);
      if (f.type === "order.created") {
        if (order) return {};
        this.orders.set(f.aggregateId, {
          id: f.aggregateId,
          status: "active",
          tableNumber: str(p.tableNumber),
          guestCount: num(p.guestCount),
          currency: str(p.currency).toUpperCase(),
          items: lineItems(p.items),
          total: totalOf(lineItems(p.items)),
          payments: [],
          version: f.version,
          tickets: [],
          createdAt: f.hubTime,
          updatedAt: f.hubTime,
          createdBy: f.deviceId,
        });
        return { order: f.aggregateId };
      }
      if (!order) return {};
      order.version = Math.max(order.version, f.version);
      order.updatedAt = f.hubTime || order.updatedAt;
      switch (f.type) {
        case "order.updated":
          if (Array.isArray(p.items)) {
            order.items = lineItems(p.items);
            order.total = totalOf(order.items);
          }
          if (typeof p.tableNumber === "string") order.tableNumber = p.tableNumber;
          if (typeof p.guestCount === "number") order.guestCount = p.guestCount;
          break;
        case "order.parked":
          order.status = "parked";
          break;
        case "order.reparked":
          order.status = "active";
          break;
        case "order.paid":
          order.status = "paid";
          // A marker: the hub checked the payments; this screen only learns it is paid.
          order.payments = f.redacted
            ? []
            : objects(p.payments).map((x) => ({ method: str(x.method), amount: num(x.amount) }));
          order.lock = undefined;
          break;
        case "order.cancelled":
          order.status = "cancelled";
          order.lock = undefined;
          break;
        case "order.locked":
        case "order.lock.renew":
          order.lock = {
            holder: f.deviceId,
            userId: f.userId,
            expiresAt: f.hubTime ? f.hubTime + clampTtl(optNum(p.ttlMs)) : 0,
          };
          break;
        case "order.lock.released":
          order.lock = undefined;
          break;
      }
      return { order: order.id };
    }
    if (f.aggregateType === "kds" || f.aggregateType === "bds") {
      const kind: TicketKind = f.aggregateType;
      const key = ticketKey(kind, f.aggregateId);
      let ticket = this.tickets.get(key);
      if (f.type.endsWith(".ticket.created")) {
        if (ticket) return {};
        const orderId = str(p.orderId);
        ticket = {
          key,
          kind,
          id: f.aggregateId,
          orderId,
          station: str(p.station),
          tableNumber: this.orders.get(orderId)?.tableNumber ?? "",
          items: objects(p.items).map((x) => ({
            sku: str(x.sku),
            name: str(x.name),
            quantity: num(x.quantity),
            notes: str(x.notes),
          })),
          status: "created",
          version: f.version,
          createdAt: f.hubTime,
          doneAt: 0,
        };
        this.tickets.set(key, ticket);
      } else if (ticket) {
        ticket.version = Math.max(ticket.version, f.version);
        if (f.type.endsWith(".ack")) ticket.status = "acked";
        if (f.type.endsWith(".done")) {
          ticket.status = "done";
          ticket.doneAt = f.hubTime;
        }
      } else {
        return {};
      }
      const order = this.orders.get(ticket.orderId);
      if (order) {
        const ref = order.tickets.find((r) => r.kind === kind && r.id === ticket.id);
        if (ref) ref.status = ticket.status;
        else order.tickets.push({ kind, id: ticket.id, status: ticket.status });
      }
      return { ticket: key, order: order?.id };
    }
    return {};
  }
}

const ORDER_STATUS: Record<number, OrderStatus> = {
  [PbOrderStatus.ACTIVE]: "active",
  [PbOrderStatus.PARKED]: "parked",
  [PbOrderStatus.PAID]: "paid",
  [PbOrderStatus.CANCELLED]: "cancelled",
};
const TICKET_KIND: Record<number, TicketKind> = { [PbTicketKind.KDS]: "kds", [PbTicketKind.BDS]: "bds" };
const TICKET_STATUS: Record<number, TicketStatus> = {
  [PbTicketStatus.CREATED]: "created",
  [PbTicketStatus.ACKED]: "acked",
  [PbTicketStatus.DONE]: "done",
};

/** An order of a hub's live state (Bootstrap) as the screens show it; undefined for a
 * status this app does not know. Hub times of 0 were not recorded (an order moved over
 * from the hub's first data format). */
export function orderFromHub(o: PbOrder): OrderView | undefined {
  const status = ORDER_STATUS[o.status];
  if (!status) return undefined;
  const tickets: OrderView["tickets"] = [];
  for (const t of o.tickets) {
    const kind = TICKET_KIND[t.kind];
    const ticketStatus = TICKET_STATUS[t.status];
    if (kind && ticketStatus) tickets.push({ kind, id: t.id, status: ticketStatus });
  }
  return {
    id: o.id,
    status,
    tableNumber: o.tableNumber,
    guestCount: Number(o.guestCount),
    currency: o.currency,
    items: o.items.map((it) => ({
      id: it.id,
      sku: it.sku,
      name: it.name,
      unitPrice: Number(it.unitPrice),
      quantity: Number(it.quantity),
      category: it.category,
      modifiers: it.modifiers.map((m) => ({ id: m.id, name: m.name, price: Number(m.price) })),
    })),
    total: Number(o.total),
    payments: o.payments.map((p) => ({ method: p.method, amount: Number(p.amount) })),
    version: Number(o.version),
    lock: o.lock
      ? { holder: o.lock.holder, userId: o.lock.userId, expiresAt: Number(o.lock.expiresAtMs) }
      : undefined,
    tickets,
    createdAt: Number(o.createdAtMs),
    updatedAt: Number(o.updatedAtMs),
    // The live state does not say which device created an order.
    createdBy: "",
  };
}

/** A ticket of a hub's live state (see `orderFromHub`). */
export function ticketFromHub(t: PbTicket, orders: Map<string, OrderView>): TicketView | undefined {
  const kind = TICKET_KIND[t.kind];
  const status = TICKET_STATUS[t.status];
  if (!kind || !status) return undefined;
  return {
    key: ticketKey(kind, t.id),
    kind,
    id: t.id,
    orderId: t.orderId,
    station: t.station,
    tableNumber: orders.get(t.orderId)?.tableNumber ?? "",
    items: t.items.map((i) => ({ sku: i.sku, name: i.name, quantity: Number(i.quantity), notes: i.notes })),
    status,
    version: Number(t.version),
    createdAt: Number(t.createdAtMs),
    doneAt: status === "done" ? Number(t.updatedAtMs) : 0,
  };
}

/** Σ (unitPrice + modifier prices) × quantity, in minor units, as the hub computes it. */
export function totalOf(items: LineItem[]): number {
  return items.reduce(
    (sum, it) => sum + (it.unitPrice + it.modifiers.reduce((m, x) => m + x.price, 0)) * it.quantity,
    0,
  );
}

/** The line items in the payload shape the hub reads (camelCase JSON). */
export function itemsPayload(items: LineItem[]): JsonValue[] {
  return items.map((it) => ({
    id: it.id,
    sku: it.sku,
    name: it.name,
    unitPrice: it.unitPrice,
    quantity: it.quantity,
    category: it.category,
    modifiers: it.modifiers.map((m) => ({ id: m.id, name: m.name, price: m.price })),
  }));
}

/** Whether `lock` keeps `device` from editing at hub time `now`. */
export function lockedAgainst(lock: LockView | undefined, device: string, now: number): boolean {
  if (!lock || lock.holder === device) return false;
  return lock.expiresAt === 0 || now < lock.expiresAt;
}

function str(v: JsonValue | undefined): string {
  return typeof v === "string" ? v : "";
}

function num(v: JsonValue | undefined): number {
  return typeof v === "number" ? v : 0;
}

function optNum(v: JsonValue | undefined): number | undefined {
  return typeof v === "number" ? v : undefined;
}

function objects(v: JsonValue | undefined): JsonObject[] {
  return Array.isArray(v) ? v.filter((x): x is JsonObject => typeof x === "object" && x !== null && !Array.isArray(x)) : [];
}

function lineItems(v: JsonValue | undefined): LineItem[] {
  return objects(v).map((x) => ({
    id: str(x.id),
    sku: str(x.sku),
    name: str(x.name),
    unitPrice: num(x.unitPrice),
    quantity: num(x.quantity),
    category: str(x.category),
    modifiers: objects(x.modifiers).map((m) => ({ id: str(m.id), name: str(m.name), price: num(m.price) })),
  }));
}
