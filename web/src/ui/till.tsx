// The till: open orders by status, a new order for a table, and one order's editor
// (menu, quantities, modifiers, send to kitchen/bar, park, recall, pay). Opening an order
// takes its lease lock and renews it while open; another device's lock makes the order
// read-only, naming the holder.

import type { JsonObject } from "@bufbuild/protobuf";
import { useEffect, useState } from "preact/hooks";
import type { Device, Draft } from "../device";
import type { MenuItem } from "../gen/pos/v1/hub_pb";
import { itemsPayload, lockedAgainst, type LineItem, type OrderStatus, type OrderView, type TicketView } from "../model";
import { shortId } from "../uuid";
import { money, parseMoney } from "./format";
import { go, useNow } from "./hooks";

/** The ttl the till asks for its locks, and how often it renews them (as the Rust SDK). */
const LOCK_TTL_MS = 45_000;
const LOCK_RENEW_MS = 15_000;

const TABS: { status: OrderStatus; label: string }[] = [
  { status: "active", label: "Active" },
  { status: "parked", label: "Parked" },
  { status: "paid", label: "Paid" },
];

export function Till({ device, orderId }: { device: Device; orderId?: string }) {
  return (
    <div class="till">
      <OrderList device={device} selected={orderId} />
      {orderId ? (
        <OrderEditor key={orderId} device={device} orderId={orderId} />
      ) : (
        <section class="panel empty-panel">
          <p>Pick an order, or start a new one for a table.</p>
        </section>
      )}
    </div>
  );
}

function OrderList({ device, selected }: { device: Device; selected?: string }) {
  const [tab, setTab] = useState<OrderStatus>("active");
  const [table, setTable] = useState("");
  const [guests, setGuests] = useState("2");
  const [problem, setProblem] = useState("");
  const orders = [...device.view.orders.values()]
    .filter((o) => o.status === tab)
    .sort((a, b) => (b.createdAt || Number.MAX_SAFE_INTEGER) - (a.createdAt || Number.MAX_SAFE_INTEGER));
  const counts = (s: OrderStatus) => [...device.view.orders.values()].filter((o) => o.status === s).length;

  const create = async (e: Event) => {
    e.preventDefault();
    const tableNumber = table.trim();
    const guestCount = Number(guests);
    if (!tableNumber) return setProblem("Enter a table number.");
    if (!Number.isInteger(guestCount) || guestCount < 0 || guestCount > 10_000) {
      return setProblem("Guests must be a whole number.");
    }
    setProblem("");
    const id = shortId("o");
    await device.append([
      {
        aggregateType: "order",
        aggregateId: id,
        type: "order.created",
        payload: { tableNumber, guestCount, currency: device.menu?.currency || "USD", items: [] },
      },
    ]);
    setTable("");
    go("till", id);
  };

  return (
    <section class="panel order-list">
      <form class="new-order" onSubmit={create}>
        <label>
          Table
          <input
            data-testid="new-table"
            inputMode="numeric"
            value={table}
            onInput={(e) => setTable(e.currentTarget.value)}
          />
        </label>
        <label>
          Guests
          <input inputMode="numeric" value={guests} onInput={(e) => setGuests(e.currentTarget.value)} />
        </label>
        <button type="submit" class="primary" data-testid="new-order">
          New order
        </button>
      </form>
      {problem && <p class="problem">{problem}</p>}
      <div class="tabs" role="tablist">
        {TABS.map((t) => (
          <button
            role="tab"
            aria-selected={tab === t.status}
            class={tab === t.status ? "tab on" : "tab"}
            data-testid={`tab-${t.status}`}
            onClick={() => setTab(t.status)}
          >
            {t.label} <span class="count">{counts(t.status)}</span>
          </button>
        ))}
      </div>
      <ul class="orders">
        {orders.length === 0 && <li class="none">No {tab} orders.</li>}
        {orders.map((o) => (
          <li key={o.id}>
            <button
              class={o.id === selected ? "order-row on" : "order-row"}
              data-testid="order-row"
              data-order-id={o.id}
              data-table={o.tableNumber}
              onClick={() => go("till", o.id)}
            >
              <span class="table-no">Table {o.tableNumber || "–"}</span>
              <span class="meta">
                {o.items.reduce((n, it) => n + it.quantity, 0)} items · {money(o.total)}
              </span>
              {o.lock && o.lock.holder !== device.deviceId && <span class="badge">🔒 {o.lock.holder}</span>}
            </button>
          </li>
        ))}
      </ul>
    </section>
  );
}

function OrderEditor({ device, orderId }: { device: Device; orderId: string }) {
  useNow(1_000);
  const order = device.view.orders.get(orderId);
  const me = device.deviceId;
  const open = order !== undefined && (order.status === "active" || order.status === "parked");
  const lockedByOther = order !== undefined && lockedAgainst(order.lock, me, device.hubNow());
  const mine = order?.lock?.holder === me;

  // Take the lock when the order is free (on opening, or once another device lets go).
  useEffect(() => {
    if (open && !lockedByOther && !mine) {
      void device.append([lockDraft(orderId, "order.locked")]);
    }
  }, [orderId, open, lockedByOther, mine]);

  // Renew while open; take it again if it lapsed (e.g. the till was offline too long).
  useEffect(() => {
    const timer = setInterval(() => {
      const o = device.view.orders.get(orderId);
      if (!o || !(o.status === "active" || o.status === "parked") || o.lock?.holder !== me) return;
      const lapsed = o.lock.expiresAt !== 0 && device.hubNow() >= o.lock.expiresAt;
      void device.append([lockDraft(orderId, lapsed ? "order.locked" : "order.lock.renew")]);
    }, LOCK_RENEW_MS);
    return () => clearInterval(timer);
  }, [orderId]);

  // Let go when the order is closed on this screen.
  useEffect(
    () => () => {
      const o = device.view.orders.get(orderId);
      if (o && (o.status === "active" || o.status === "parked") && o.lock?.holder === me) {
        void device.append([{ aggregateType: "order", aggregateId: orderId, type: "order.lock.released", payload: {} }]);
      }
    },
    [orderId],
  );

  if (!order) {
    return (
      <section class="panel empty-panel">
        <p>Order {orderId} is not on this device (yet).</p>
        <button onClick={() => go("till")}>Back</button>
      </section>
    );
  }
  const editable = mine && order.status === "active";
  const edit = (items: LineItem[]) =>
    device.append([
      { aggregateType: "order", aggregateId: orderId, type: "order.updated", payload: { items: itemsPayload(items) } },
    ]);

  return (
    <section class="panel editor" data-testid="order-editor" data-order-id={order.id} data-status={order.status}>
      <header class="editor-head">
        <button class="ghost" data-testid="close-order" onClick={() => go("till")}>
          ← Close
        </button>
        <h2>
          Table {order.tableNumber || "–"} <small>{order.id}</small>
        </h2>
        <span class={`status status-${order.status}`} data-testid="order-status">
          {order.status}
        </span>
      </header>
      {lockedByOther && (
        <p class="locked" data-testid="locked-by">
          🔒 Locked by {order.lock?.holder}
          {order.lock?.userId ? ` (${order.lock.userId})` : ""} — read only until they close it.
        </p>
      )}
      <div class="editor-body">
        <Lines order={order} editable={editable} onEdit={edit} menu={device.menu?.items ?? []} />
        {order.status === "active" && (
          <Menu items={device.menu?.items ?? []} disabled={!editable} onAdd={(m) => edit(addItem(order.items, m))} />
        )}
      </div>
      <TicketStrip device={device} order={order} />
      <footer class="editor-foot">
        <span class="total" data-testid="order-total">
          Total {money(order.total, order.currency)}
        </span>
        {order.status === "active" && (
          <>
            <SendButton device={device} order={order} disabled={!mine} />
            <button data-testid="park" disabled={!editable} onClick={() => device.append([simple(orderId, "order.parked")])}>
              Park
            </button>
            <PayButton device={device} order={order} disabled={!editable || order.items.length === 0} />
          </>
        )}
        {order.status === "parked" && (
          <button
            class="primary"
            data-testid="recall"
            disabled={!mine}
            onClick={() => device.append([simple(orderId, "order.reparked")])}
          >
            Recall
          </button>
        )}
        {order.status === "paid" && (
          <span data-testid="paid">
            Paid {order.payments.map((p) => `${p.method} ${money(p.amount)}`).join(", ")}
          </span>
        )}
      </footer>
    </section>
  );
}

function Lines({
  order,
  editable,
  onEdit,
  menu,
}: {
  order: OrderView;
  editable: boolean;
  onEdit: (items: LineItem[]) => void;
  menu: MenuItem[];
}) {
  const set = (id: string, change: (it: LineItem) => LineItem | null) =>
    onEdit(order.items.flatMap((it) => (it.id === id ? (change(it) ?? []) : [it])));
  if (order.items.length === 0) return <p class="lines none">No items yet: tap the menu.</p>;
  return (
    <ul class="lines" data-testid="lines">
      {order.items.map((it) => {
        const offered = menu.find((m) => m.sku === it.sku)?.modifiers ?? [];
        return (
          <li key={it.id} data-testid="line" data-sku={it.sku} data-quantity={it.quantity}>
            <div class="line-main">
              <span class="line-name">{it.name}</span>
              <span class="qty">
                <button
                  aria-label={`one less ${it.name}`}
                  data-testid="qty-down"
                  disabled={!editable}
                  onClick={() => set(it.id, (x) => (x.quantity > 1 ? { ...x, quantity: x.quantity - 1 } : null))}
                >
                  −
                </button>
                <span data-testid="qty">{it.quantity}</span>
                <button
                  aria-label={`one more ${it.name}`}
                  data-testid="qty-up"
                  disabled={!editable}
                  onClick={() => set(it.id, (x) => ({ ...x, quantity: x.quantity + 1 }))}
                >
                  +
                </button>
              </span>
              <span class="line-total">
                {money((it.unitPrice + it.modifiers.reduce((s, m) => s + m.price, 0)) * it.quantity)}
              </span>
            </div>
            {offered.length > 0 && (
              <div class="mods">
                {offered.map((m) => {
                  const on = it.modifiers.some((x) => x.id === m.id);
                  return (
                    <button
                      class={on ? "chip on" : "chip"}
                      aria-pressed={on}
                      data-testid="modifier"
                      disabled={!editable}
                      onClick={() =>
                        set(it.id, (x) => ({
                          ...x,
                          modifiers: on
                            ? x.modifiers.filter((y) => y.id !== m.id)
                            : [...x.modifiers, { id: m.id, name: m.name, price: Number(m.price) }],
                        }))
                      }
                    >
                      {m.name}
                      {m.price > 0n ? ` +${money(Number(m.price))}` : ""}
                    </button>
                  );
                })}
              </div>
            )}
          </li>
        );
      })}
    </ul>
  );
}

function Menu({ items, disabled, onAdd }: { items: MenuItem[]; disabled: boolean; onAdd: (m: MenuItem) => void }) {
  if (items.length === 0) {
    return <p class="menu none">No menu: start the hub with --menu FILE (see examples/menu.json).</p>;
  }
  const categories = [...new Set(items.map((m) => m.category))];
  return (
    <div class="menu" data-testid="menu">
      {categories.map((c) => (
        <div class="menu-group">
          <h3>{c}</h3>
          <div class="menu-grid">
            {items
              .filter((m) => m.category === c)
              .map((m) => (
                <button class="menu-item" data-testid="menu-item" data-sku={m.sku} disabled={disabled} onClick={() => onAdd(m)}>
                  <span>{m.name}</span>
                  <small>{money(Number(m.price))}</small>
                </button>
              ))}
          </div>
        </div>
      ))}
    </div>
  );
}

/** One more of a menu item: a plain line of the same item grows, else a new line. */
function addItem(items: LineItem[], m: MenuItem): LineItem[] {
  const same = items.find((it) => it.sku === m.sku && it.modifiers.length === 0);
  if (same) return items.map((it) => (it === same ? { ...it, quantity: it.quantity + 1 } : it));
  return [
    ...items,
    {
      id: shortId("li"),
      sku: m.sku,
      name: m.name,
      unitPrice: Number(m.price),
      quantity: 1,
      category: m.category,
      modifiers: [],
    },
  ];
}

const isBar = (category: string) => category === "beverage";
const notesOf = (it: LineItem) => it.modifiers.map((m) => m.name).join(", ");
const itemKey = (sku: string, name: string, notes: string) => `${sku}\u0000${name}\u0000${notes}`;

/** The order's lines not yet on any of its tickets, as new KDS/BDS tickets: one per
 * kitchen station and one for the bar. */
export function ticketsToSend(order: OrderView, tickets: TicketView[], menu: MenuItem[]): Draft[] {
  const sent = new Map<string, number>();
  for (const t of tickets.filter((t) => t.orderId === order.id)) {
    for (const it of t.items) {
      const k = itemKey(it.sku, it.name, it.notes);
      sent.set(k, (sent.get(k) ?? 0) + it.quantity);
    }
  }
  const groups = new Map<string, { kind: "kds" | "bds"; station: string; items: Record<string, string | number>[] }>();
  for (const it of order.items) {
    const k = itemKey(it.sku, it.name, notesOf(it));
    const already = sent.get(k) ?? 0;
    const todo = it.quantity - already;
    sent.set(k, Math.max(0, already - it.quantity));
    if (todo <= 0) continue;
    const kind = isBar(it.category) ? "bds" : "kds";
    const station = kind === "bds" ? "" : menu.find((m) => m.sku === it.sku)?.station || "kitchen";
    const g = groups.get(`${kind}/${station}`) ?? { kind, station, items: [] };
    const line: Record<string, string | number> = { sku: it.sku, name: it.name, quantity: todo };
    if (notesOf(it)) line.notes = notesOf(it);
    g.items.push(line);
    groups.set(`${kind}/${station}`, g);
  }
  return [...groups.values()].map((g): Draft => {
    const payload: JsonObject = { orderId: order.id, items: g.items };
    if (g.station) payload.station = g.station;
    return {
      aggregateType: g.kind,
      aggregateId: shortId(g.kind === "kds" ? "kt" : "bt"),
      type: `${g.kind}.ticket.created`,
      payload,
    };
  });
}

function SendButton({ device, order, disabled }: { device: Device; order: OrderView; disabled: boolean }) {
  const drafts = ticketsToSend(order, [...device.view.tickets.values()], device.menu?.items ?? []);
  const count = drafts.reduce((n, d) => n + (d.payload.items as unknown[]).length, 0);
  return (
    <button class="primary" data-testid="send" disabled={disabled || count === 0} onClick={() => device.append(drafts)}>
      Send to kitchen/bar{count ? ` (${count})` : ""}
    </button>
  );
}

function TicketStrip({ device, order }: { device: Device; order: OrderView }) {
  if (order.tickets.length === 0) return null;
  return (
    <ul class="ticket-strip">
      {order.tickets.map((t) => {
        const ticket = device.view.tickets.get(`${t.kind}:${t.id}`);
        return (
          <li data-testid="ticket-status" data-ticket-id={t.id} data-status={t.status} class={`tstatus tstatus-${t.status}`}>
            {t.kind === "kds" ? `Kitchen${ticket?.station ? ` (${ticket.station})` : ""}` : "Bar"}: {statusWord(t.status)}
          </li>
        );
      })}
    </ul>
  );
}

function statusWord(s: string): string {
  return s === "created" ? "sent" : s === "acked" ? "cooking" : "done";
}

function PayButton({ device, order, disabled }: { device: Device; order: OrderView; disabled: boolean }) {
  const [paying, setPaying] = useState(false);
  const [method, setMethod] = useState<"cash" | "card">("card");
  const [amount, setAmount] = useState("");
  const cents = parseMoney(amount);
  const matches = cents === order.total;
  if (!paying) {
    return (
      <button
        class="primary"
        data-testid="pay"
        disabled={disabled}
        onClick={() => {
          setAmount(money(order.total));
          setPaying(true);
        }}
      >
        Pay
      </button>
    );
  }
  return (
    <div class="pay-dialog" role="dialog" aria-label="Payment" data-testid="pay-dialog">
      <div class="methods">
        {(["cash", "card"] as const).map((m) => (
          <button class={method === m ? "chip on" : "chip"} aria-pressed={method === m} onClick={() => setMethod(m)}>
            {m}
          </button>
        ))}
      </div>
      <label>
        Amount
        <input data-testid="pay-amount" inputMode="decimal" value={amount} onInput={(e) => setAmount(e.currentTarget.value)} />
      </label>
      {!matches && (
        <p class="problem" data-testid="pay-problem">
          The amount must match the total, {money(order.total, order.currency)}.
        </p>
      )}
      <button
        class="primary"
        data-testid="pay-confirm"
        disabled={!matches}
        onClick={() => {
          setPaying(false);
          void device.append([
            {
              aggregateType: "order",
              aggregateId: order.id,
              type: "order.paid",
              payload: { payments: [{ method, amount: cents }], total: order.total, currency: order.currency || "USD" },
            },
          ]);
        }}
      >
        Take {money(Number.isNaN(cents) ? 0 : cents)}
      </button>
      <button class="ghost" onClick={() => setPaying(false)}>
        Cancel
      </button>
    </div>
  );
}

function lockDraft(orderId: string, type: "order.locked" | "order.lock.renew"): Draft {
  return { aggregateType: "order", aggregateId: orderId, type, payload: { ttlMs: LOCK_TTL_MS } };
}

function simple(orderId: string, type: string): Draft {
  return { aggregateType: "order", aggregateId: orderId, type, payload: {} };
}
